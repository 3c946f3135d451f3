"""The latent and observed sites of a model program, and the flat latent vector evaluation works in.

elbogap's own models have one latent site ``"z"`` and one observed site ``"x"``; a user's
program (:class:`~elbogap.user_model.ProgramModel`) names its own and may have several latent
sites. Estimators of log p(x) (quadrature, IWAE, AIS) see all latent sites of a data point as
one flat vector of ``latent_dim`` real numbers, joined in the order of ``model.latent_sites``. A
site whose support is not the real line (a Gamma or Beta latent) enters that vector through the
inverse of ``biject_to(support)``, as Pyro's HMC does; :func:`constrain` maps it back and gives
the log-Jacobian that keeps densities over the real vector right. A simplex of K values (a Dirichlet
latent) enters it as the K - 1 numbers of Pyro's stick-breaking map (:func:`unconstrained_shapes`).
"""

import contextlib
import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch.distributions import biject_to, constraints

from elbogap.errors import UsageError


def latent_sites(model) -> dict[str, torch.Size]:
    """The model's latent sites and their per-point shapes (elbogap's own models: ``{"z": (latent_dim,)}``)."""
    sites = getattr(model, "latent_sites", None)
    return sites if sites is not None else {"z": torch.Size([model.latent_dim])}


def observed_sites(model) -> list[str]:
    return list(getattr(model, "observed_sites", None) or ["x"])


def plain_support(support):
    """``support`` with each mixture's constraint replaced by its components': the same set, and one that
    ``biject_to`` knows (a tester's MixtureSameFamily of two Normals, on the real line, was refused)."""
    if isinstance(support, constraints.independent):
        return constraints.independent(plain_support(support.base_constraint), support.reinterpreted_batch_ndims)
    if isinstance(support, constraints.MixtureSameFamilyConstraint):
        return plain_support(support.base_constraint)
    return support


def real_line_map(support, name: str, spec: str):
    """``biject_to(support)``, the map from the real line onto a latent site's support; refused in one line where torch
    has none (a positive-definite matrix), as Pyro's HMC refuses it."""
    try:
        return biject_to(plain_support(support))
    except NotImplementedError:
        raise UsageError(f"the model {spec} has a latent site {name!r} on {support}, which torch maps one to one onto "
                         "no real vector (biject_to); write it through latents that have such a map (a covariance "
                         "as an LKJCholesky factor and positive scales)") from None


def unconstrained_shapes(model) -> dict[str, torch.Size]:
    """Each latent site's per-point shape on the real line (:func:`real_line_shapes`); ``model.latent_dim`` is their
    total size."""
    return real_line_shapes(latent_sites(model), latent_transforms(model))


def real_line_shapes(sites: dict, transforms: dict) -> dict[str, torch.Size]:
    """Each of ``sites`` (name -> shape) in the shape its ``transforms`` (``biject_to`` of its support, where it has
    one) take it from on the real line: its own, or fewer values (a simplex of K values: K - 1)."""
    return {name: torch.Size(transforms[name].inverse_shape(shape)) if name in transforms else torch.Size(shape)
            for name, shape in sites.items()}


def split_latents(model, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a flat latent vector ``(..., latent_dim)`` into the model's sites on the real line, each ``(..., *shape)``
    in its :func:`unconstrained_shapes` shape."""
    return split_flat(unconstrained_shapes(model), z)


def split_flat(sites: dict[str, torch.Size], z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut a flat vector ``(..., sum of the sizes)`` into ``sites`` (name -> per-point shape), in their order."""
    if len(sites) == 1:
        (name, shape), = sites.items()
        return {name: z.reshape(*z.shape[:-1], *shape)}
    pieces = z.split([math.prod(shape) for shape in sites.values()], dim=-1)
    return {name: piece.reshape(*piece.shape[:-1], *shape) for (name, shape), piece in zip(sites.items(), pieces,
                                                                                          strict=True)}


def broadcasts_draws(model) -> bool:
    """Whether ``model`` runs under an outer plate of draws (elbogap's models; a program that passed the probe)."""
    return getattr(model, "broadcasts_draws", False)


def repeat_rows(x: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` copies of the rows of ``x`` stacked draw after draw: ``(count * len(x), ...)``."""
    return x.expand(count, *x.shape).reshape(-1, *x.shape[1:])


def latent_transforms(model) -> dict:
    """``biject_to(support)`` of each latent site whose support is not the real line (none for elbogap's models)."""
    return getattr(model, "latent_transforms", None) or {}


def flatten_latents(model, values: dict[str, torch.Tensor], batch_dims: int) -> torch.Tensor:
    """The inverse of :func:`split_latents`: site values with ``batch_dims`` leading dimensions, joined flat.

    Values of constrained sites are mapped to the real line first (see :func:`latent_transforms`).
    """
    transforms = latent_transforms(model)
    values = {name: transforms[name].inv(value) if name in transforms else value for name, value in values.items()}
    return torch.cat([values[name].reshape(*values[name].shape[:batch_dims], -1) for name in latent_sites(model)], -1)


def constrain(model, values: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | float]:
    """Site values from :func:`split_latents` mapped into their supports, and :math:`\\sum \\log |\\det J|` per point.

    The density of the flat real vector is the sites' density times that Jacobian, so integrals over
    it (quadrature, AIS) give the same evidence as over the sites themselves.
    """
    transforms, sites = latent_transforms(model), unconstrained_shapes(model)
    log_det: torch.Tensor | float = 0.0
    out = dict(values)
    for name, transform in transforms.items():
        unconstrained = values[name]
        out[name] = transform(unconstrained)
        jacobian = transform.log_abs_det_jacobian(unconstrained, out[name])
        lead = unconstrained.shape[:unconstrained.dim() - len(sites[name])]
        log_det = log_det + jacobian.reshape(*lead, -1).sum(-1)
    return out, log_det


def scored(site: dict) -> torch.Tensor:
    """A trace site's log-density as Pyro's ELBOs count it: ``fn.log_prob(value)`` times the site's scale, with its
    mask (``poutine.scale``, ``poutine.mask``, ``obs_mask``: a masked entry counts 0, a tempered likelihood its
    power)."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])


def scored_per_point(site: dict) -> torch.Tensor:
    """:func:`scored` without the factor a subsampled plate puts on a guide's site (its full size over the
    subsample's), the program's own scale and mask kept: a density per data point, as an evaluation on some rows of a
    split needs (the model there runs on those rows alone, unsubsampled). A guide with parameters per point
    (``auto:AutoNormal``) runs in a plate of the split's full size; on 4 gap points of 240 its log q counted 60 times,
    and the ELBO of those points read +109 nats, above log p(x)."""
    factor = 1.0
    for frame in site["cond_indep_stack"]:
        if frame.vectorized and frame.full_size and frame.size and frame.full_size != frame.size:
            factor *= frame.full_size / frame.size
    return scored(site) / factor


def check_unscaled_latents(trace, spec: str) -> None:
    """Refuse in one line a latent site under ``poutine.scale`` or ``poutine.mask``: its draws (from the program run
    forward) would not have the density it is scored with, which estimators that start from the prior assume."""
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("_do_not_score"):
            continue
        scale, mask = site["scale"], site["mask"]
        scaled = bool(torch.as_tensor(scale != 1.0).any()) if not isinstance(scale, float) else scale != 1.0
        observed = name.removesuffix("_unobserved")
        if f"{observed}_observed" in trace.nodes and name.endswith("_unobserved"):  # how Pyro splits an obs_mask
            raise UsageError(f"the model {spec} gives its site {observed!r} an obs_mask, and Pyro samples the masked "
                             f"entries as a latent site ({name!r}) whose posterior elbogap would then judge; to leave "
                             "them out, observe every entry under poutine.mask(mask=...) instead (a masked entry "
                             "counts nothing), with any number in its place")
        if scaled or mask is not None and not (isinstance(mask, bool) and mask):
            raise UsageError(f"the model {spec} scales or masks its latent site {name!r} (poutine.scale / "
                             "poutine.mask); elbogap honours them on observed sites only (a tempered or masked "
                             "likelihood): move the scale or mask to the observations")


#: the outer plate q's draws are taken under at once, as Pyro's vectorized particles are
DRAWS_PLATE = "elbogap_draws"


def traces_under_draws(guide, guide_args: tuple, model, model_args: tuple, count: int | None = None,
                       nesting: int = 0):
    """The trace of the program ``guide(*guide_args)`` and of ``model(*model_args)`` replayed on it: one draw, or
    ``count`` at once under :data:`DRAWS_PLATE` left of ``nesting`` plate dimensions. What every q-draws path of either
    kind of model (per point or global) runs before it scores the draws its own way."""
    with pyro.plate(DRAWS_PLATE, count, dim=-(nesting + 1)) if count is not None else contextlib.nullcontext():
        guide_trace = poutine.trace(guide).get_trace(*guide_args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*model_args)
    return guide_trace, model_trace


def draws_depth(guide, guide_args: tuple, model, model_args: tuple) -> int:
    """How deep the plates of one draw of ``guide`` and of ``model`` replayed on it nest (:func:`plate_depth`): the
    plate of draws goes left of them."""
    return plate_depth(*traces_under_draws(guide, guide_args, model, model_args))


def plate_depth(*traces) -> int:
    """How deep the plates of the sample sites of ``traces`` nest (0 without a plate): an outer plate of draws goes
    one dimension further left."""
    return max([-frame.dim for trace in traces for site in trace.nodes.values() if site["type"] == "sample"
                for frame in site["cond_indep_stack"] if frame.dim is not None] or [0])


def data_plates(samples: dict) -> set[str]:
    """The names of the plates the observed sites among ``samples`` (a trace's sample sites by name) lie in."""
    return {frame.name for site in samples.values() if site["is_observed"] for frame in site["cond_indep_stack"]}


def is_per_point(site: dict, plates: set[str], rows: int) -> bool:
    """Whether a latent site is one value per data point: inside a data plate (``plates``, :func:`data_plates`), with
    its first dimension one entry per row of the ``rows`` the program ran on. Any other latent is global."""
    value = site["value"]
    return bool({frame.name for frame in site["cond_indep_stack"]} & plates) and value.dim() > 0 \
        and value.shape[0] == rows
