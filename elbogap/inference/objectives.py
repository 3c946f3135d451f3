"""Training objectives: Pyro's ELBO estimators, chosen by short name."""

from pyro.infer import ELBO, JitTrace_ELBO, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

from elbogap.errors import UsageError

OBJECTIVES = ("elbo", "meanfield", "iwae")


def make_objective(name: str = "elbo", num_particles: int = 1, jit: bool = False,
                   vectorize: bool = True) -> ELBO | None:
    r"""Return a Pyro loss by name.

    - ``"elbo"``: :class:`~pyro.infer.Trace_ELBO`, the reparameterized ELBO;
    - ``"meanfield"``: :class:`~pyro.infer.TraceMeanField_ELBO`, the same bound with the KL to
      the prior taken analytically where Pyro knows it;
    - ``"iwae"``: :class:`~pyro.infer.RenyiELBO` with :math:`\alpha = 0`, the importance-weighted
      bound :math:`\mathbb{E}\log \frac1K \sum_k p(x, z_k) / q(z_k \mid x)` with
      :math:`K` = ``num_particles`` [1].

    Particles are drawn at once under Pyro's vectorized particle plate, or one after another with
    ``vectorize=False`` (for a model program that does not broadcast over a leading dimension).

    With ``jit``, ``"elbo"`` compiled by Pyro's JIT (``JitTrace_ELBO``), and ``None`` for the
    others: Pyro has no compiled RenyiELBO, and its ``JitTraceMeanField_ELBO`` (1.9.2)
    recompiles on every call because it caches under a name it never reads.

    References:

    [1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov,
        arXiv:1509.00519
    """
    if num_particles < 1:
        raise UsageError(f"--particles must be at least 1, got {num_particles}")
    # Models and guides have exactly one plate, the data plate; saying so spares Pyro a guess.
    options = {"num_particles": num_particles, "max_plate_nesting": 1}
    vectorized = vectorize and num_particles > 1
    if name not in OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    if jit and name != "elbo":
        return None
    if jit:  # the plate's minibatch scale becomes a constant of the traced graph, as intended: no warnings
        return JitTrace_ELBO(vectorize_particles=vectorized, ignore_jit_warnings=True, **options)
    if name == "elbo":
        return Trace_ELBO(vectorize_particles=vectorized, **options)
    if name == "meanfield":
        return TraceMeanField_ELBO(vectorize_particles=vectorized, **options)
    return RenyiELBO(alpha=0.0, vectorize_particles=vectorize, **options)
