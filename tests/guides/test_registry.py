"""Families are registered by the module that defines them: a new family is one file in elbogap/guides/."""

import json
import sys

import pytest
import torch

import elbogap.guides as guides
from elbogap.cli import main
from elbogap.guides import GUIDES, build_guide, families
from elbogap.guides.guide import FAMILIES
from elbogap.inference import evaluate
from elbogap.inference.gaps import optimal_guide
from tests.conftest import draw_linear_data

#: a family written as a user would add one: this file alone, dropped into the package
ISOTROPIC = '''
import pyro.distributions as dist

from elbogap.guides.base import ParametricGuide, positive
from elbogap.guides.guide import family


@family("isotropic")
class Isotropic(ParametricGuide):
    """Isotropic Gaussian q(z | x) = N(mu(x), s(x)^2 I): one scale for every latent dimension."""

    def __init__(self, data_dim, latent_dim, hidden_dims=(128,), activation="softplus"):
        super().__init__(data_dim, latent_dim, hidden_dims, activation)
        self.loc = self.head(latent_dim)
        self.scale = self.head(1)

    def unconstrained(self, h):
        return {"loc": self.loc(h), "raw_scale": self.scale(h)}

    def from_unconstrained(self, loc, raw_scale):
        return dist.Normal(loc, positive(raw_scale).expand(loc.shape)).to_event(1)
'''


@pytest.fixture
def isotropic_file(tmp_path, monkeypatch):
    """``isotropic.py`` in a folder of the package's search path, as if it were saved in elbogap/guides/; the registry
    forgets it afterwards."""
    (tmp_path / "isotropic.py").write_text(ISOTROPIC)
    monkeypatch.setattr(guides, "__path__", [*guides.__path__, str(tmp_path)])
    guides._import_modules.cache_clear()
    yield
    FAMILIES.pop("isotropic", None)
    sys.modules.pop("elbogap.guides.isotropic", None)
    guides._import_modules.cache_clear()


def test_every_built_in_family_is_registered_by_its_module_in_alphabetical_order():
    assert list(GUIDES) == ["diag", "exact", "full", "iaf", "local", "lowrank", "mixture", "planar", "spline",
                            "sylvester"]
    assert families() == GUIDES and all(cls.__module__.startswith("elbogap.guides.") for cls in GUIDES.values())


def test_two_families_of_one_name_are_refused():
    with pytest.raises(ValueError, match="two families are named 'diag'"):
        guides.family("diag")(type("Other", (guides.DiagonalNormal,), {}))


def test_a_family_added_as_one_file_is_built_refitted_and_compared(isotropic_file, linear_model, tmp_path):
    """Its q* on the linear model's Gaussian posterior N(m, Lambda^-1) is the best isotropic Gaussian, N(m, s^2 I)
    with s^2 = d / tr Lambda, at KL = (d log(tr Lambda / d) - log det Lambda) / 2; and --guides takes its name."""
    assert "isotropic" in families()
    points = draw_linear_data(linear_model, 20, seed=5)
    guide = build_guide("isotropic", linear_model, len(points), hidden_dims=(8,)).double()
    star = optimal_guide(linear_model, guide, points)
    precision = torch.linalg.inv(linear_model.posterior(points[:1]).covariance_matrix[0])
    d = precision.shape[0]
    closed = 0.5 * (d * torch.log(precision.trace() / d) - torch.logdet(precision))
    fitted = evaluate(linear_model, star, points).metrics["kl_exact"]
    assert float(closed) > 0.05 and float(closed) - 1e-9 <= fitted < float(closed) + 5e-3  # only optimization error

    out = tmp_path / "out"
    assert main(["compare", "--model", "linear", "--guides", "isotropic,diag", "--seeds", "0", "--steps", "40",
                 "--train-size", "200", "--test-size", "50", "--hidden-dims", "8", "--gap-points", "8", "--jobs", "1",
                 "--quiet", "--no-figures", "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [run["guide"] for run in runs] == ["isotropic", "diag"]
    assert runs[0]["test"]["log_px_method"] == "exact" and runs[0]["test"]["kl_gap"] > 0
