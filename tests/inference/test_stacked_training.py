"""The seeds of elbogap's models trained as one program: the loss is Pyro's ELBO integrand, a fit does not depend on
which fits it trained with, and the stacked fits land where lone runs land."""

import json
import math

import pyro
import pytest
import torch
from pyro import poutine

from elbogap import streams
from elbogap.backends import RunTask
from elbogap.checkpoint import load_checkpoint
from elbogap.config import Config
from elbogap.data import load_data
from elbogap.factory import build, for_data, load_dataset, make_trainer
from elbogap.guides import build_guide
from elbogap.inference import evaluate, gaps
from elbogap.inference.stacked_training import FitPair, StackedRefits, StackedTraining, refusal
from elbogap.inference.stacking import NotStackable, RowAdam, reparameterized
from elbogap.inference.train import REFIT, refit_guide
from elbogap.model import VAE
from elbogap.runs import CHECKPOINT, run_one
from elbogap.seeds import stack_seeds
from tests.test_cli import QUICK

FAMILIES = ("diag", "full", "lowrank", "iaf")  # q's density anywhere; planar's only at its own draws
#: a study's sizes that the tests of its checkpoints and curves do not read (a narrow network, few points and draws
#: in its curve evaluations and its q*), as the command line's QUICK sets them
SMALL_EVALUATIONS = {"hidden_dims": [16], "train_size": 400, "test_size": 100, "eval_samples": 16,
                     "quadrature_points": 16, "curve_points": 32, "gap_points": 8}


@pytest.fixture(scope="module")
def x():
    return load_data("digits").train[:96]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_stacked_loss_is_the_integrand_of_pyros_elbo_at_the_same_draws(name, x):
    """-[log p(x, z) - log q(z | x)] with both densities read off Pyro's traces of the model and the guide."""
    model = VAE(64, 3, hidden_dims=(16,))
    guide = build_guide(name, model, len(x), hidden_dims=(16,))
    eps = torch.randn(1, len(x), 3 if name != "lowrank" else 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = FitPair(model, guide)(x, eps, torch.tensor(1.0), 1.0)
        z = reparameterized(guide.distribution(x), eps)[0]
        model_trace = poutine.trace(poutine.condition(model.model, {"z": z})).get_trace(x)
        guide_trace = poutine.trace(poutine.condition(guide.guide, {"z": z})).get_trace(x)
    expected = -(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-3)


def test_a_draw_from_given_normals_is_the_location_plus_the_factor_times_them_for_a_batch_and_under_vmap():
    """loc + L eps (and loc + W eps_W + sqrt(D) eps_D for low rank), draws leading a batch of distributions, and the
    same per fit under vmap, where the product is taken as rows times the factor's transpose (the factor times
    each draw as a column copied it once per draw: 830 ms a step against 21 ms at 1,201 latents)."""
    generator = torch.Generator().manual_seed(0)
    loc, eps = torch.randn(3, 4, generator=generator), torch.randn(5, 3, 4, generator=generator)
    tril = torch.randn(3, 4, 4, generator=generator).tril() + 3 * torch.eye(4)
    full = torch.distributions.MultivariateNormal(loc, scale_tril=tril)
    assert torch.allclose(reparameterized(full, eps), loc + torch.einsum("bij,pbj->pbi", tril, eps), atol=1e-6)
    factor, diagonal = torch.randn(3, 4, 2, generator=generator), torch.rand(3, 4, generator=generator) + 0.5
    low = torch.distributions.LowRankMultivariateNormal(loc, factor, diagonal)
    low_eps = torch.cat([eps[..., :2], torch.randn(5, 3, 4, generator=generator)], -1)
    expected = loc + torch.einsum("bir,pbr->pbi", factor, low_eps[..., :2]) + diagonal.sqrt() * low_eps[..., 2:]
    assert torch.allclose(reparameterized(low, low_eps), expected, atol=1e-6)
    per_fit = torch.func.vmap(lambda m, t, e: reparameterized(torch.distributions.MultivariateNormal(
        m, scale_tril=t, validate_args=False), e))(loc, tril, eps.transpose(0, 1))
    assert torch.allclose(per_fit, reparameterized(full, eps).transpose(0, 1), atol=1e-6)


def trainers_for(config, data, guide_name, seeds):
    config = for_data(config, data, guide_name)
    trainers = []
    for seed in seeds:  # as a run builds them
        pyro.clear_param_store()
        streams.seeded("training", seed)
        model, guide = build(config, data, guide_name)
        trainers.append(make_trainer(config, model, guide, data, seed))
    return trainers


def test_a_fit_steps_as_it_would_with_other_fits_or_alone_and_its_run_takes_over_its_adam_state():
    config = Config(steps=40)
    data = load_dataset(config)
    three = StackedTraining(trainers_for(config, data, "iaf", [0, 1, 2]), [0, 1, 2], 1, 40)
    alone = StackedTraining(trainers_for(config, data, "iaf", [1]), [1], 1, 40)
    three.run()
    alone.run()
    for name, value in three.params.items():
        assert torch.allclose(value[1], alone.params[name][0], atol=1e-5), name
    assert three.losses[1] == pytest.approx(alone.losses[0], abs=1e-4)
    three.write_back()
    trainer = three.trainers[1]
    three.load_into(1, trainer)
    assert trainer.step_count == 40 and trainer.losses == three.losses[1]
    encoder = trainer.guide.encoder[0].weight
    state = trainer.svi.optimizer.state[encoder]
    leaf = three.leaves[three.leaf_index["guide.encoder.0.weight"]]
    assert state["step"] == 40 and torch.equal(encoder, leaf[1].detach())
    assert torch.equal(state["exp_avg"], three.adam.moments[three.leaf_index["guide.encoder.0.weight"]][0][1])
    trainer.kl_warmup_steps = 100  # the KL weight of its last step, as a lone run's SNR at step 40 reads it
    three.load_into(1, trainer)
    assert trainer.kl_weight.beta == pytest.approx(0.39)


def test_the_gradient_snr_measured_at_once_is_each_runs_own_measurement():
    """Every fit's SNR from the stack's gradients at once (its run's fixed minibatch, the KL weight of its last step
    under warm-up, the stream ``snr_draws`` of its seed and step) against its lone trainer's, which draws the same
    normals through Pyro's traces: the same numbers up to float rounding, per group, for every fit."""
    config = Config(steps=30, kl_warmup=10.0, particles=2)
    data = load_dataset(config)
    seeds = [3, 5, 8]
    stack = StackedTraining(trainers_for(config, data, "iaf", seeds), seeds, 2, 30)
    stack.run()
    at_once = stack.gradient_snr([0, 2], draws=8)
    assert set(at_once) == {0, 2}
    store = pyro.get_param_store()
    for g in (0, 2):
        with store.scope():
            stack.write_back(g)
            stack.load_into(g, stack.trainers[g])
            lone = stack.trainers[g].gradient_snr(8)
        assert set(at_once[g]) == set(lone) == {"encoder", "decoder"}
        for group, snr in lone.items():
            assert at_once[g][group].entries == snr.entries
            assert at_once[g][group].median == pytest.approx(snr.median, rel=1e-3)
            assert at_once[g][group].mean == pytest.approx(snr.mean, rel=1e-3)


def test_stacked_seeds_end_where_lone_runs_of_the_same_seeds_end():
    """The ELBO per point over the last 100 steps of 400: four stacked seeds against four lone runs. The seeds'
    spread is the noise of either mean; the two means agree within four standard errors of their difference."""
    config = Config(steps=400)
    data = load_dataset(config)
    seeds = [0, 1, 2, 3]
    stack = StackedTraining(trainers_for(config, data, "diag", seeds), seeds, 1, 400)
    stack.run()
    stacked = torch.tensor([-sum(losses[-100:]) / 100 for losses in stack.losses])
    lone = []
    for seed in seeds:  # each built and run alone: Pyro's param store holds one run's modules at a time
        trainer = trainers_for(config, data, "diag", [seed])[0]
        trainer.run(400)
        lone.append(-sum(trainer.losses[-100:]) / 100)
    lone = torch.tensor(lone)
    stderr = math.sqrt(stacked.var() / len(seeds) + lone.var() / len(seeds))
    assert abs(stacked.mean() - lone.mean()) < 4 * stderr
    assert (stacked - lone).abs().max() < 1.0  # the same seeds' initial weights and minibatches: close, not equal


def trained_refits(config, name: str, seeds: list[int], points: int) -> tuple[StackedTraining, StackedRefits]:
    """``seeds`` of ``name`` trained at once for ``config.steps``, and their q* on the first ``points`` test points
    set up at once (not yet run)."""
    data = load_dataset(config)
    stack = StackedTraining(trainers_for(config, data, name, seeds), seeds, 1, config.steps)
    stack.run()
    stack.write_back()
    x = data.test[:points]
    return stack, StackedRefits([t.model for t in stack.trainers], [t.guide for t in stack.trainers], x, seeds, 1)


@pytest.mark.parametrize("name", ["full", pytest.param("iaf", marks=pytest.mark.slow)])  # iaf: about 15 s
def test_q_star_refit_at_once_reaches_the_elbo_a_lone_refit_reaches(name):
    """Each seed's q* on 32 points, searched in one stacked program and by refit_guide alone from the same start
    (its own parameters for full, the encoder's features for the flow): the ELBO per point of the last window of
    each agrees within four standard errors of the two windows' means (their steps' spread) and 0.01 nats."""
    stack, refits = trained_refits(Config(steps=60), name, [0, 1, 2], 32)
    x = refits.x
    refits.run()
    assert all(refits.converged)
    for g, trainer in enumerate(stack.trainers):
        star = trainer.guide.optimum_start(x, torch.arange(len(x)))
        pyro.clear_param_store()
        lone = refit_guide(trainer.model, star, x, jit=False)
        window = REFIT.window
        a, b = torch.tensor(refits.losses[g][-window:]), torch.tensor(lone.losses[-window:])
        assert abs(a.mean() - b.mean()) < 4 * math.sqrt(a.var() / window + b.var() / window) + 0.01


def test_q_star_refit_at_once_sticks_the_landing_and_finds_the_linear_models_exact_posterior():
    """The stacked refits take the rule's gradient estimator: with it, each seed's full-rank q* is the exact posterior
    of the linear-Gaussian model (its analytic KL under 1e-6 nats per point; the reparameterized refit stopped 1.8e-3
    short here), and its stacked loss scores q's draws as sticking the landing does."""
    stack, refits = trained_refits(Config(model="linear", steps=60), "full", [0, 1], 32)
    x = refits.x
    assert all(pair.stick for pair in refits.modules)
    refits.run()
    refits.write_back()
    assert all(refits.converged)
    for trainer, star in zip(stack.trainers, refits.stars, strict=True):
        assert float(evaluate(trainer.model, star, x).metrics["kl_exact"]) < 1e-6


def test_a_run_takes_its_q_star_found_at_once_instead_of_refitting_and_refits_on_other_points(monkeypatch):
    config = Config(steps=20)
    data = load_dataset(config)
    stack, refits = trained_refits(config, "diag", [0, 1], 16)
    x = refits.x
    refits.run()
    refits.write_back()
    entry = {"x": x, "state": refits.stars[1].state_dict(), "seconds": 1.0, "converged": True,
             "losses": torch.tensor(refits.losses[1], dtype=torch.float64)}
    model, guide = stack.trainers[1].model, stack.trainers[1].guide

    def refuses(*args, **kwargs):
        raise AssertionError("refit alone")

    monkeypatch.setattr(gaps, "refit_guide", refuses)
    taken = gaps.gap_decomposition(model, guide, x, given=entry, elbo_samples=64, iw_samples=64)
    assert taken["q_star_converged"] and taken["amort_gap"] > 0
    with pytest.raises(AssertionError, match="refit alone"):  # other points: its own search
        gaps.gap_decomposition(model, guide, data.test[16:32], given=entry, elbo_samples=64, iw_samples=64)


def test_families_with_free_per_point_parameters_and_other_objectives_train_one_seed_at_a_time():
    config = for_data(Config(), load_dataset(Config()))
    data = load_dataset(config)
    model, mixture = build(config, data, "mixture")
    assert refusal(config, model, mixture, "mixture") == "mixture trains on its ELBO summed over its components"
    _, local = build(config, data, "local")
    assert "local is not amortized by an encoder" in refusal(config, model, local, "local")
    _, diag = build(config, data, "diag")
    assert refusal(config, model, diag, "diag") is None
    assert "--objective iwae" in refusal(config.replace(objective="iwae"), model, diag, "diag")
    assert "--stacked-fits off" in refusal(config.replace(stacked_fits="off"), model, diag, "diag")


def test_a_fit_whose_loss_turns_nan_stops_alone_and_gets_no_checkpoint(tmp_path):
    config = Config(steps=30, seeds=[0, 1], out=str(tmp_path))
    data = load_dataset(config)
    trainers = trainers_for(config, data, "diag", [0, 1])
    stack = StackedTraining(trainers, [0, 1], 1, 30)
    with torch.no_grad():
        stack.leaves[stack.leaf_index["model.out.bias"]][1, 0] = math.nan
    stack.run()
    assert stack.failed == [False, True] and stack.steps == [30, 0]
    assert not stack.params_finite(1) and stack.params_finite(0)


def test_a_stop_while_seeds_train_at_once_leaves_each_run_a_checkpoint_with_its_curve_so_far(tmp_path):
    seeds = [0, 1, 2, 3]
    config = Config(steps=300, guides=["mixture", "diag"], seeds=seeds, out=str(tmp_path), **SMALL_EVALUATIONS)
    data = load_dataset(config)
    tasks = [RunTask(guide, seed, str(tmp_path / "runs" / f"{guide}-seed{seed}"))
             for guide in ("mixture", "diag") for seed in seeds]
    asked = [0]

    def stop_after_100_steps():
        asked[0] += 1
        return 15 if asked[0] > 100 else None

    outcome = stack_seeds(config, data, tasks, should_stop=stop_after_100_steps)
    assert outcome == {"mixture": "one at a time: mixture trains on its ELBO summed over its components", "diag": 4}
    generators = []
    for task in tasks[4:]:
        state = load_checkpoint(f"{task.run_dir}/{CHECKPOINT}")
        assert state["stacked"] == 4 and not state["complete"] and 95 <= int(state["trainer"]["step"]) <= 100
        assert [point["step"] for point in json.loads(state["curve_eval"])] == [30, 60, 90]
        generators.append(state["trainer"]["rng"]["cpu"])
    assert len({bytes(generator.numpy()) for generator in generators}) == 4  # each run goes on with its own draws
    run = run_one(config, data, "diag", 1, tasks[5].run_dir)  # alone, from its step, without --resume
    assert run["stacked_seeds"] == 4 and run["steps"] == 300 and len(run["curve"]) == 100
    assert [point["step"] for point in run["curve_eval"]] == list(range(30, 301, 30))
    assert "snr_encoder" in run["curve_eval"][0] and math.isfinite(run["test"]["kl_gap"])


def test_stacked_seeds_score_the_trend_rules_window_as_lone_runs_do(tmp_path):
    """Each seed of a stack scores its ELBO on fixed draws at the trend rule's window's ends, its own parameters
    handed over (kept in its checkpoint): the gains agree with the same seeds' lone runs within four standard errors
    of the difference of their means (the seeds' spread; stacked and lone runs draw different numbers)."""
    seeds = [0, 1, 2, 3]
    config = Config(steps=100, guides=["diag"], seeds=seeds, hidden_dims=[32], gap_points=0, snr_draws=0,
                    eval_every=100, out=str(tmp_path))
    data = load_dataset(config)
    tasks = [RunTask("diag", seed, str(tmp_path / "runs" / f"diag-seed{seed}")) for seed in seeds]
    assert stack_seeds(config, data, tasks, should_stop=lambda: None) == {"diag": 4}
    stacked = [json.loads(load_checkpoint(f"{task.run_dir}/{CHECKPOINT}")["trainer"]["window_gain"])
               for task in tasks]
    lone = []
    for seed in seeds:
        trainer = trainers_for(config, data, "diag", [seed])[0]
        trainer.run(100, lambda trainer: trainer.check_window(100))
        lone.append(trainer.window_gain)
    assert all(gain["terms"] == 1024 and gain["gain_stderr"] > 0 for gain in stacked + lone)
    a, b = (torch.tensor([gain["gain"] for gain in gains]) for gains in (stacked, lone))
    assert abs(a.mean() - b.mean()) < 4 * math.sqrt(a.var() / 4 + b.var() / 4)


@pytest.mark.slow  # about 25 s; in CI test_stacked_seeds_end_where_lone_runs_of_the_same_seeds_end stacks seeds
def test_a_study_stacks_four_seeds_or_more_on_its_workers_and_says_so(elbogap, tmp_path):
    """Four seeds of a guide train as one program, the two guides' stacks side by side on two workers; two seeds
    train in their runs (a stack of two costs what they do)."""
    code, err = elbogap("compare", "--guides", "diag,full", "--seeds", "0,1,2,3", *QUICK, "--jobs", "2",
                        "--out", tmp_path)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["fits_at_once"] == {"diag": 4, "full": 4}
    for run in results["runs"]:
        assert run["stacked_seeds"] == 4 and len(run["curve_eval"]) == 2 and not run["compiled_loss"]  # 40 steps / 20
        assert run["convergence"]["rule"] == "trend" and math.isfinite(run["test"]["kl_gap"])
        for split in ("train", "test"):  # q* refit at once with the stack, taken by the run
            assert run[split]["q_star_converged"] and run[split]["approx_gap"] + run[split]["amort_gap"] == (
                pytest.approx(run[split]["gap_kl"]))
        saved = load_checkpoint(tmp_path / run["run_dir"] / "q_star.pt")
        assert {"train", "test"} <= set(saved) and len(saved["test"]["x"]) == 8
    assert "Each seed of diag, full trained with the guide's other seeds as one program" in (
        tmp_path / "results.md").read_text()
    code, _ = elbogap("compare", "--guides", "diag", "--seeds", "0,1", *QUICK, "--out", tmp_path / "two")
    assert code == 0 and "fits_at_once" not in json.loads((tmp_path / "two" / "results.json").read_text())


def test_a_fit_that_turns_nan_at_an_evaluation_step_leaves_the_others_their_checkpoints(tmp_path, monkeypatch):
    """Fit 1's parameters turn NaN at its 6th update, with a curve evaluation every 5 steps: its run gets no
    checkpoint (it trains alone and meets the fault), and the other three are evaluated and saved as usual."""
    seeds = [0, 1, 2, 3]
    config = Config(steps=20, eval_every=5, seeds=seeds, guides=["diag"], out=str(tmp_path), **SMALL_EVALUATIONS)
    data = load_dataset(config)
    tasks = [RunTask("diag", seed, str(tmp_path / "runs" / f"diag-seed{seed}")) for seed in seeds]
    update, calls = RowAdam.update, [0]

    def poisoned(self, rows):
        update(self, rows)
        calls[0] += 1
        if calls[0] == 6:
            with torch.no_grad():
                self.leaves[0][1] = math.nan

    monkeypatch.setattr(RowAdam, "update", poisoned)
    assert stack_seeds(config, data, tasks) == {"diag": 3}
    assert not (tmp_path / "runs" / "diag-seed1" / CHECKPOINT).exists()
    for seed in (0, 2, 3):
        state = load_checkpoint(tmp_path / "runs" / f"diag-seed{seed}" / CHECKPOINT)
        assert [point["step"] for point in json.loads(state["curve_eval"])] == [5, 10, 15, 20]


def test_the_stacked_update_runs_where_the_parameters_are():
    """Rates and step counts stay on the CPU; the update itself on the leaves' device (here PyTorch's meta device,
    which checks placement without a GPU)."""
    leaves = [torch.zeros(3, 4, device="meta", requires_grad=True)]
    leaves[0].grad = torch.ones(3, 4, device="meta")
    adam = RowAdam(leaves, 0.01)
    adam.update([0, 1, 2])
    adam.update([1])
    assert adam.lr.device.type == "cpu" and adam.steps.tolist() == [1, 2, 1]


def test_the_probe_refuses_a_family_vmap_cannot_run():
    config = Config(steps=10)
    data = load_dataset(config)
    trainers = trainers_for(config, data, "diag", [0, 1])

    def branches(x):  # data-dependent control flow, which vmap cannot batch
        if bool((x > 0.5).any()):
            return trainers[0].guide.from_features(trainers[0].guide.encoder(x))
        raise AssertionError

    for trainer in trainers:
        trainer.guide.distribution = lambda x, index=None: branches(x)
    with pytest.raises(NotStackable, match="vmap cannot run the family"):
        StackedTraining(trainers, [0, 1], 1, 10)
