"""log p(D) by AIS over every latent, against closed forms and exact numerics; BDMC around simulated truths."""

import pytest
import torch

from elbogap.global_latents.evidence import ais_evidence, bdmc_evidence
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.ais import AISSettings
from tests.global_latents import truth

#: cheap under vmap: chains cost little more than one, and each adds to the estimate's precision
SETTINGS = AISSettings(steps=400, chains=1024)


def regression_case():
    data = truth.regression_data(8, 2, seed=3)
    exact = truth.regression_log_evidence(data[:, :-1].double(), data[:, -1].double(), 1.0, 1.0)
    return truth.regression_model(1.0, 1.0), data, exact


def scale_case():
    data = truth.scale_data(4, seed=1)
    return truth.scale_model(), data, truth.scale_log_evidence(data[:, 0].double())


def mixed_case():
    data = truth.mixed_data(4, seed=2)
    return truth.mixed_model(), data, truth.mixed_log_evidence(data[:, 0].double())


@pytest.mark.parametrize("case", [regression_case, scale_case, mixed_case], ids=["conjugate", "scale", "mixed"])
def test_ais_evidence_is_within_five_hundredths_of_a_nat_of_the_exact_value(case):
    program, data, exact = case()
    model = GlobalLatentModel(program, data, "model")
    evidence = ais_evidence(model, data, SETTINGS)
    assert evidence.stderr < 0.03, "the test needs a standard error well inside its tolerance"
    assert abs(evidence.log_evidence - exact) < min(0.05, 4 * evidence.stderr)


def test_a_dropped_jacobian_would_be_caught():
    """The scale model's evidence without the log-Jacobian of tau's map is off by far more than the tolerance."""
    program, data, exact = scale_case()
    model = GlobalLatentModel(program, data, "model")
    transform = model.transforms["tau"]
    model.transforms["tau"] = type("NoJacobian", (), {
        "__call__": lambda self, u: transform(u), "inv": transform.inv,
        "log_abs_det_jacobian": lambda self, u, v: torch.zeros_like(u)})()
    assert abs(ais_evidence(model, data, AISSettings(steps=200, chains=256)).log_evidence - exact) > 0.2


def test_bdmc_brackets_the_exact_evidence_of_each_simulated_data_set():
    program, data, _ = mixed_case()
    model = GlobalLatentModel(program, data, "model")
    summary, datasets = bdmc_evidence(model, data, 2, AISSettings(steps=120, chains=256))
    for lower, upper, simulated in zip(summary["per_dataset"]["lower"], summary["per_dataset"]["upper"], datasets,
                                       strict=True):
        exact = truth.mixed_log_evidence(simulated[:, 0].double())
        slack = 4 * summary["width_stderr"] * len(datasets) ** 0.5 + 0.05
        assert lower - slack <= exact <= upper + slack
    assert summary["width"] > -0.1 and summary["datasets"] == 2
