"""FastSVI: the update of Pyro's SVI with ClippedAdam, found parameters, one optimizer, a compiled loss."""

import copy
import types

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from elbogap.guides import build_guide
from elbogap.inference.kl import analytic_kl
from elbogap.inference.objectives import make_objective
from elbogap.inference.svi import FastSVI, find_params
from elbogap.inference.train import frozen, make_svi
from elbogap.model import VAE
from elbogap.user_model import ProgramModel
from tests.conftest import optimal_diag_guide


def small_vae(seed=0):
    torch.manual_seed(seed)
    model = VAE(12, 2, hidden_dims=(8,))
    return model, build_guide("iaf", model, 40, hidden_dims=(8,))


@pytest.fixture
def x():
    return torch.rand(40, 12, generator=torch.Generator().manual_seed(1)).round()


def test_find_params_sees_model_and_guide_but_not_a_blocked_model(x):
    model, guide = small_vae()
    args = (x[:4], torch.arange(4))
    found = {id(p) for p in find_params(model.model, guide.guide, *args)}
    assert found == {id(p) for p in [*model.parameters(), *guide.parameters()]}
    blocked = poutine.block(model.model, hide_types=["param"])
    assert {id(p) for p in find_params(blocked, guide.guide, *args)} == {id(p) for p in guide.parameters()}


def test_updates_are_those_of_pyro_svi_with_clipped_adam(x):
    """One optimizer over every tensor updates each exactly as Pyro's one-optimizer-per-tensor does."""
    model, guide = small_vae()
    theirs = copy.deepcopy(model), copy.deepcopy(guide)
    batches = [torch.arange(40)[step % 4::4] for step in range(15)]
    fast = FastSVI(model.model, guide.guide, (x, torch.arange(40)), lr=0.05, lr_decay=0.98)
    ours = []
    for step, batch in enumerate(batches):
        torch.manual_seed(step)
        ours.append(fast.step(x[batch], batch, num_data=40))
    pyro.clear_param_store()  # both register their modules as "model" and "guide"
    svi = SVI(theirs[0].model, theirs[1].guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.98, "clip_norm": 10.0}),
              Trace_ELBO(max_plate_nesting=1))
    for step, batch in enumerate(batches):
        torch.manual_seed(step)
        assert ours[step] == pytest.approx(svi.step(x[batch], batch, 40), rel=1e-6)
    for mine, reference in zip([*model.parameters(), *guide.parameters()],
                               [*theirs[0].parameters(), *theirs[1].parameters()], strict=True):
        torch.testing.assert_close(mine, reference)


def exact_elbo(model, guide, x):
    """log p(x) - KL(q || p(z | x)) summed over the rows of x, in closed form (PPCA, Gaussian q)."""
    return (model.log_px(x) - analytic_kl(guide.distribution(x), model.posterior(x))).sum()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("jit", [False, True])
def test_the_loss_and_its_gradient_are_unbiased(jit, linear_model, linear_data):
    """Mean of 400 one-sample estimates of the ELBO and of its gradient against the closed form, within 4 s.e."""
    guide = optimal_diag_guide(linear_model, scale_factor=1.5)
    x, index = linear_data[:50], torch.arange(50)
    linear_model.requires_grad_(False)
    params = list(guide.parameters())
    truth = exact_elbo(linear_model, guide, x)
    true_grad = torch.cat([g.flatten() for g in torch.autograd.grad(-truth, params)])
    loss = make_objective("elbo", jit=jit)
    losses, grads = [], []
    for _ in range(400):
        losses.append(loss.loss_and_grads(linear_model.model, guide.guide, x, index, num_data=50))
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        for p in params:
            p.grad = None
    losses, grads = torch.tensor(losses, dtype=torch.float64), torch.stack(grads)
    assert abs(losses.mean() + truth.item()) < 4 * losses.std() / 20
    stderr = grads.std(0) / 20 + 1e-9
    assert ((grads.mean(0) - true_grad).abs() < 4 * stderr).all()


def test_compiling_leaves_the_random_stream_alone(x):
    """The first compiled step (which traces the programs) draws what any later step would."""
    model, guide = small_vae()
    args, kwargs = (x[:8], torch.arange(8)), {"num_data": 40}
    warm = FastSVI(model.model, guide.guide, args, kwargs, lr=0.0, jit=True)
    warm.step(*args, **kwargs)  # compiled now
    cold = FastSVI(model.model, guide.guide, args, kwargs, lr=0.0, jit=True)
    torch.manual_seed(3)
    first = cold.step(*args, **kwargs)
    torch.manual_seed(3)
    assert warm.step(*args, **kwargs) == first
    assert cold.compiled


def test_other_shapes_and_warm_up_steps_run_uncompiled_with_the_same_updates(x):
    model, guide = small_vae()
    svi = FastSVI(model.model, guide.guide, (x[:8], torch.arange(8)), {"num_data": 40}, lr=0.01, jit=True)
    svi.step(x[:3], torch.arange(3), num_data=40)  # a short batch: uncompiled, nothing traced yet
    assert not svi._traced
    svi.step(x[:8], torch.arange(8), num_data=40, eager=True)
    assert not svi._traced
    svi.step(x[:8], torch.arange(8), num_data=40)
    assert svi._traced


def test_mixtures_and_user_programs_are_not_compiled(x):
    model = VAE(12, 2, hidden_dims=(8,))
    mixture = build_guide("mixture", model, 40, hidden_dims=(8,))
    assert not make_svi(model, mixture, x, 8, jit=True).compiled
    assert make_svi(model, build_guide("diag", model, 40, hidden_dims=(8,)), x, 8, jit=True).compiled

    foreign = types.SimpleNamespace(model=model.model)  # a user's class says nothing about JIT: not compiled
    assert not make_svi(foreign, build_guide("diag", model, 40, hidden_dims=(8,)), x, 8, jit=True).compiled


def normal_means(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def branching_means(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        scale = 0.5 if bool((z.abs() < 3).all()) else 2.0  # a branch on a draw, which a trace would freeze
        pyro.sample("x", dist.Normal(z, scale).to_event(1), obs=x)


DECODER = torch.nn.Linear(2, 2)


def decoded_means(x):
    pyro.module("decoder", DECODER)  # the program's own parameters, in Pyro's param store
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(DECODER(z), 0.5).to_event(1), obs=x)


def test_a_programs_refit_on_fixed_rows_is_compiled_unless_its_trace_meets_a_branch(x, recwarn):
    """A user's program may branch on its data, so training runs it uncompiled; a refit's rows are the same at every
    step, so there it is traced (its own parameters held fixed, as the refit holds them), and a program that branches
    on a tensor's value is left uncompiled, silently."""
    rows = x[:, :2]
    for fn, compiled in ((normal_means, True), (decoded_means, True), (branching_means, False)):
        model = ProgramModel(fn, rows, fn.__name__)
        guide = build_guide("diag", model, 40, hidden_dims=(8,))
        training = make_svi(model, guide, rows, 8, jit=True)
        training.step(rows[:8], torch.arange(8), num_data=40)
        with frozen(model):
            refit = make_svi(model, guide, rows, 40, jit=True, freeze_model=True, gradient="stl", fixed_rows=True)
            refit.step(rows, torch.arange(40), num_data=40)
        assert not training.compiled and refit.compiled == compiled, fn.__name__
    assert all(param.requires_grad for param in DECODER.parameters())  # the hold is let go
    assert not [w for w in recwarn if "could not be compiled" in str(w.message)]
