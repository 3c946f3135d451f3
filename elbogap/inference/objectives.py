"""Training objectives: Pyro's ELBO estimators, chosen by short name, and the gradient estimator of each."""

from pyro.infer import ELBO, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO

from elbogap.errors import UsageError
from elbogap.inference.iwae import IWAE

OBJECTIVES = ("elbo", "meanfield", "iwae")

#: gradient estimators, and the objectives each one estimates the gradient of
GRADIENTS = {"reparam": OBJECTIVES, "stl": ("elbo", "meanfield"), "dreg": ("iwae",)}


def check_gradient(objective: str, gradient: str) -> None:
    """Refuse, in one line, a gradient estimator that does not estimate ``objective``'s gradient."""
    if gradient not in GRADIENTS:
        raise UsageError(f"unknown --gradient {gradient!r}; choose one of {', '.join(GRADIENTS)}")
    if objective in GRADIENTS[gradient]:
        return
    if gradient == "stl":
        raise UsageError("--gradient stl sticks the landing of the ELBO, not of --objective iwae; "
                         "use --gradient dreg with iwae, or --objective elbo with stl")
    raise UsageError(f"--gradient dreg reweights the draws of the importance-weighted bound, not of --objective "
                     f"{objective}; use --objective iwae with dreg, or --gradient stl with {objective}")


def make_objective(name: str = "elbo", num_particles: int = 1, jit: bool = False,
                   vectorize: bool = True, gradient: str = "reparam", max_plate_nesting: int = 1,
                   jit_warnings: bool = False) -> ELBO | None:
    r"""Return a Pyro loss by name.

    - ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized ELBO;
    - ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, the same bound with the KL to
      the prior taken analytically where Pyro knows it;
    - ``"iwae"``: :class:`~elbogap.inference.iwae.IWAE`, the importance-weighted bound
      :math:`\mathbb{E}\log \frac1K \sum_k p(x, z_k) / q(z_k \mid x)` with :math:`K` =
      ``num_particles`` [1], per data point, with the minibatch scale outside the logarithm (Pyro's
      ``RenyiELBO`` puts it inside, which trains another objective on minibatches).

    ``gradient`` names the estimator of the bound's gradient (see :func:`check_gradient` for the
    pairings): ``"reparam"``, the losses above; ``"stl"``, the same ``"elbo"`` and ``"meanfield"``
    losses, which stick the landing once they are handed the guide program of
    :func:`~elbogap.inference.stl.stl_guide` (the estimator lives in the guide's density, not in
    the loss); ``"dreg"``, the same :class:`~elbogap.inference.iwae.IWAE` handed the guide of
    :func:`~elbogap.inference.stl.stl_guide`.

    Particles are drawn at once under Pyro's vectorized particle plate, left of the programs'
    ``max_plate_nesting`` plates, or one after another with ``vectorize=False`` (for a model program that does
    not broadcast over a leading dimension).

    With ``jit``, ``"elbo"`` compiled by Pyro's JIT (``JitTrace_ELBO``), and ``None`` for the
    others: ``IWAE`` registers gradient hooks under DReG, which a traced graph would not keep, and
    Pyro's ``JitTraceMeanField_ELBO`` (1.9.2) recompiles on every call because it caches under a
    name it never reads. Its trace's warnings (torch's ``TracerWarning``) are silenced unless
    ``jit_warnings``.

    References:

    [1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov,
        arXiv:1509.00519
    """
    if num_particles < 1:
        raise UsageError(f"--particles must be at least 1, got {num_particles}")
    # elbogap's models and guides have exactly one plate, the data plate; saying so spares Pyro a guess (a program
    # with global latents says how deep its plates nest)
    options = {"num_particles": num_particles, "max_plate_nesting": max_plate_nesting}
    vectorized = vectorize and num_particles > 1
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    check_gradient(name, gradient)
    if jit and name != "elbo":
        return None
    if jit:  # the plate's minibatch scale becomes a constant of the traced graph, as intended: no warnings
        return JitTrace_ELBO(vectorize_particles=vectorized, ignore_jit_warnings=not jit_warnings, **options)
    if name == "elbo":
        return Trace_ELBO(vectorize_particles=vectorized, **options)
    if name == "meanfield":
        return TraceMeanField_ELBO(vectorize_particles=vectorized, **options)

    return IWAE(vectorize_particles=vectorize, **options)
