"""The IAF trained from two starts, the better kept (a conjugate regression: exact evidence, closed-form best mean
field)."""

import pyro
import torch

import elbogap.global_latents.second_start as module
from elbogap.config import Config
from elbogap.data import Dataset
from elbogap.factory import for_data, make_trainer
from elbogap.global_latents.guides import GlobalAutoGuide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.global_latents.second_start import second_start, start_at_mean_field, start_choice, trains_twice
from elbogap.progress import as_progress
from tests.global_latents import truth
from tests.inference.test_convergence import conjugate_study


def iaf_run(data, **settings):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = GlobalLatentModel(truth.regression_model(1.0, 1.0), data, "regression")
    guide = GlobalAutoGuide("AutoIAFNormal", model, data)
    config = Config(model="regression.py:model", guides=["auto:AutoIAFNormal"], **settings).validate()
    dataset = Dataset("regression", data, data[:0], kind="global")
    return for_data(config, dataset, "auto:AutoIAFNormal"), model, guide, dataset


def test_the_iaf_set_to_the_mean_field_fit_is_that_diagonal_gaussian():
    """Weights 0 and biases (loc, log scale) in the network's last layer: y = loc + scale * x for every base draw."""
    data, *_ = conjugate_study()
    _, _, guide, _ = iaf_run(data)
    fit = {"loc": torch.tensor([0.5, -1.0, 0.3]), "scale": torch.tensor([0.1, 0.2, 0.05])}
    assert start_at_mean_field(guide, fit)
    x = torch.randn(50, 3)
    (part,) = guide.auto.transform.parts
    assert torch.allclose(part(x), fit["loc"] + fit["scale"] * x, atol=1e-6)


def test_the_better_start_is_kept_in_the_runs_guide(tmp_path):
    """Against a run's fit that never trained, the fit from the mean-field start wins: the run's guide then holds it
    (its ELBO on the choice's draws is the record's, exactly), within max(0.05, 4 s.e.) of at least the best mean
    field's ELBO, with that fit's convergence verdict; the caller's random state is untouched. --warm-start off
    trains once."""
    data, _, _, precision = conjugate_study()
    config, model, guide, dataset = iaf_run(data)
    assert trains_twice(config, model, guide)
    assert not trains_twice(iaf_run(data, warm_start="off")[0], model, guide)
    untrained = make_trainer(config, model, guide, dataset, seed=0)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    record = second_start(config, dataset, model, guide, untrained, 0, tmp_path / "out" / "runs" / "iaf",
                          as_progress(False))
    assert torch.equal(torch.get_rng_state(), before)
    assert record["kept"] == "mean-field fit" and record["elbo"][1] > record["elbo"][0], record
    assert record["steps"][0] == 0 and record["convergence"]["converged"] == record["converged"][1]
    assert start_choice(model, guide, dataset, config, 0)["elbo"] == record["elbo"][1]  # the kept fit, copied
    log_evidence = truth.regression_log_evidence(data[:, :3].double(), data[:, 3].double(), 1.0, 1.0)
    best_mean_field = log_evidence - truth.best_factorized_gaussian_kl(precision)
    assert record["elbo"][1] > best_mean_field - max(0.05, 4 * record["elbo_stderr"][1]), (record, best_mean_field)


def test_a_second_fit_that_meets_non_finite_parameters_leaves_the_runs_own_fit(tmp_path, monkeypatch):
    """The second fit's distribution refuses its parameters mid-run (as torch's validation does on NaN): the record
    says so, the run keeps its own fit and verdict, and its guide is untouched."""
    data, *_ = conjugate_study()
    config, model, guide, dataset = iaf_run(data)
    own = make_trainer(config, model, guide, dataset, seed=0)
    before = {name: value.clone() for name, value in guide.state_dict().items()}

    def refusing(*args, **kwargs):
        trainer = make_trainer(config, model, args[2], dataset, seed=0)

        def run(*_, **__):
            raise ValueError("Expected parameter loc (Tensor of shape (3,)) to satisfy the constraint Real(), "
                             "but found invalid values:\ntensor([nan, nan, nan])")
        trainer.run = run
        return trainer

    monkeypatch.setattr(module, "converging_trainer", refusing)
    record = second_start(config, dataset, model, guide, own, 0, tmp_path / "out" / "runs" / "iaf", as_progress(False))
    assert record["kept"] == "Pyro's start" and record["failed"].startswith("ValueError: Expected parameter loc")
    assert record["convergence"] == own.convergence(config.total_steps(len(data)))
    assert all(torch.equal(value, before[name]) for name, value in guide.state_dict().items())
