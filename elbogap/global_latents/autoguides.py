"""Pyro's autoguides as families of q over a model's latents, each declared once with what elbogap knows of it.

A guide spec ``auto:NAME`` names an entry of :data:`AUTOGUIDES`. Building it is
:func:`~elbogap.global_latents.guides.build_autoguide`; what the rest of the package asks of a family (has it a
density, do its seeds stack, which families does it contain, where does it start, from which rate) is read from its
entry here, so that adding an autoguide, or learning something about one, changes this table only.
"""

from dataclasses import dataclass

#: what AutoDelta and AutoLaplaceApproximation give instead of a density, and what to use
_POINT = "a point estimate (a Dirac delta): it has no density, so no ELBO of a distribution and no KL gap"
_LAPLACE = ("a MAP point during SVI, turned into a Gaussian only afterwards (laplace_approximation()): SVI never fits "
            "a density, so there is no KL gap of the fitted q; compare auto:AutoMultivariateNormal")


@dataclass(frozen=True)
class Autoguide:
    """One autoguide of :mod:`pyro.infer.autoguide` as elbogap measures it.

    :param str name: its class name.
    :param str no_density: empty where q has a density over the latents (so its KL gap exists); else what it gives
        instead, and what to use.
    :param bool subsampling: it keeps per-point parameters in the model's subsampled data plate, so it trains on
        minibatches.
    :param bool stacks: its q is one torch distribution over the flat unconstrained latent vector, so the fits of a
        study's seeds train as one program (:mod:`~elbogap.global_latents.stacked`).
    :param tuple contains: the families each of whose members is one of its own: its optimum is at least as good,
        and a fit of it that ends below theirs is short of it (:func:`~elbogap.global_latents.report.
        posterior_warnings`).
    :param bool starts_at_mean_field: it starts at the seed's mean-field fit (:mod:`~elbogap.global_latents.
        warm_start`).
    :param bool second_start: a run of it trains once more from the seed's mean-field fit and keeps the better fit
        (:mod:`~elbogap.global_latents.second_start`).
    :param lr: its own first learning rate, where the kind's is too large for it (None: the kind's).
    :param bool default: among the families a study compares where ``--guides`` is left at its default.
    :param default_up_to: the most latents at which a study compares it where ``--guides`` is left at its default
        (None: at any size); beyond, it is left out (:func:`left_out_by_size`), and runs where it is named.
    :param str too_large: why it is left out beyond ``default_up_to``.
    """

    name: str
    no_density: str = ""
    subsampling: bool = False
    stacks: bool = False
    contains: tuple[str, ...] = ()
    starts_at_mean_field: bool = False
    second_start: bool = False
    lr: float | None = None
    default: bool = False
    default_up_to: int | None = None
    too_large: str = ""

    @property
    def spec(self) -> str:
        return f"auto:{self.name}"


_MEAN_FIELD = ("AutoNormal", "AutoDiagonalNormal")
#: the most latents at which a default study compares the IAF: Pyro's network for d latents has a hidden layer of
#: 3d + 1 units, (3d + 1)² + 2d weights, and its step's cost grows with them. On one thread, 32 particles, a varying
#: intercept: 5, 22, 59 and 242 ms a step at 201, 501, 801 and 1,201 latents (AutoNormal 3-5 ms,
#: benchmarks/autoguide_step_cost.py); at 1,201 its
#: first fit ran 36 minutes (5,400 steps) without converging, 2,700 nats below full rank's ELBO, where the other
#: three families trained in under 2 minutes each; and it trains from two starts (BENCHMARKS.md, "The IAF at 1,201
#: latents")
IAF_DEFAULT_UP_TO = 1000
#: the family of each seed's mean-field fit, where full and low rank start and what they are checked against
MEAN_FIELD = "auto:AutoNormal"

#: every autoguide elbogap knows, in the order a default study shows them
AUTOGUIDES = {family.name: family for family in (
    Autoguide("AutoNormal", subsampling=True, stacks=True, default=True),
    Autoguide("AutoDiagonalNormal", stacks=True),
    # a full-rank covariance holds a low-rank-plus-diagonal one, which holds a diagonal one
    Autoguide("AutoMultivariateNormal", stacks=True, contains=("AutoLowRankMultivariateNormal", *_MEAN_FIELD),
              starts_at_mean_field=True, default=True),
    Autoguide("AutoLowRankMultivariateNormal", stacks=True, contains=_MEAN_FIELD, starts_at_mean_field=True,
              default=True),
    # one affine autoregressive transform of N(0, I), y = mu(x) + exp(s(x)) x, in the program's sampling order
    # (global_latents.guides.sampling_order_iaf), within Pyro's bounds on exp(s): a
    # diagonal Gaussian where its network is constant, and any Gaussian where mu is linear (y = m + L x, L lower
    # triangular in its order): its ReLU units, 3 per input degree, are linear over the draws' range with a large
    # bias. Neither Pyro's start nor the mean-field fit wins on every benchmark model, so it trains from both
    # (docs/benchmark-history.md, "The IAF held to the mean-field fit"). At lr 0.05 it settled 5 nats low on the
    # logistic regression example and then crawled for 20000 steps
    Autoguide("AutoIAFNormal", stacks=True, contains=("AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
                                                      *_MEAN_FIELD), second_start=True, lr=0.01, default=True,
              default_up_to=IAF_DEFAULT_UP_TO,
              too_large="Pyro's autoregressive network has (3d + 1)² + 2d weights for d latents, its cost a step grows "
                        "with them, and it trains from two starts: at 1,201 latents its first fit ran 36 minutes "
                        "without converging, where the other default families trained in under 2 minutes each"),
    Autoguide("AutoNormalizingFlow", lr=0.01),
    Autoguide("AutoStructured", subsampling=True),
    Autoguide("AutoGaussian"),
    Autoguide("AutoDelta", no_density=_POINT),
    Autoguide("AutoLaplaceApproximation", no_density=_LAPLACE),
)}


def autoguide(spec: str) -> Autoguide | None:
    """The entry of a guide spec ``auto:NAME`` (or a class name), or None for any other guide."""
    return AUTOGUIDES.get(spec.removeprefix("auto:"))


def with_density() -> list[str]:
    """The names of the autoguides whose q has a density."""
    return [family.name for family in AUTOGUIDES.values() if not family.no_density]


def left_out_by_size(spec: str, latent_dim: int) -> str | None:
    """Why a default study leaves out the family ``spec`` on a model of ``latent_dim`` latents (its
    :attr:`~Autoguide.default_up_to` and :attr:`~Autoguide.too_large`), or None where it does not."""
    family = autoguide(spec)
    if family is None or family.default_up_to is None or latent_dim <= family.default_up_to:
        return None
    others = ",".join(other.spec for other in AUTOGUIDES.values() if other.default and other is not family)
    return (f"{latent_dim:,} latents are more than the {family.default_up_to:,} it is compared at by default: "
            f"{family.too_large}; to include it, name it beside the others (--guides {others},{family.spec})")
