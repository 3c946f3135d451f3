r"""A hierarchical program written centred, rewritten non-centred for its evidence.

A latent site :math:`\theta_j \sim \mathcal{N}(\mu, \tau)` whose location or scale are themselves latent (a
centred hierarchy) gives the posterior a funnel: where :math:`\tau` is small, every :math:`\theta_j` is pinned
near :math:`\mu`, and HMC with one step size cannot enter that neck. The same program written non-centred,
:math:`\theta_j = \mu + \tau\, \epsilon_j` with :math:`\epsilon_j \sim \mathcal{N}(0, 1)` a latent instead, has
the same evidence (a change of variables of the latents leaves :math:`p(D)` unchanged) and no funnel where the
data say little about each :math:`\theta_j`. Pyro's ``LocScaleReparam(centered=0)`` makes that rewrite (after
``TransformReparam`` for a transformed family, as ``LogNormal``)
(Gorinova, Moore, Hoffman 2019, arXiv:1906.03028); this module picks the sites, applies it, and maps the
rewritten program's latents back to the program's own.
"""

import torch
from pyro import distributions as dist
from pyro import poutine
from pyro.infer.reparam import LocScaleReparam, TransformReparam

from elbogap.user_model import sample_sites

#: location-scale families ``LocScaleReparam`` rewrites as ``loc + scale * noise`` (``StudentT`` keeps its ``df``)
LOC_SCALE = (dist.Normal, dist.StudentT, dist.Cauchy, dist.Laplace)


def _loc_scale(fn):
    """The location-scale distribution under a site's ``Independent`` wrappers and transforms (a ``LogNormal``'s
    ``Normal``), or None."""
    while isinstance(fn, (torch.distributions.Independent, torch.distributions.TransformedDistribution)):
        fn = fn.base_dist
    return fn if type(fn) in LOC_SCALE else None


def _unwrapped(fn):
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def hierarchical_sites(program, data: torch.Tensor, draws: int = 2) -> list[str]:
    """The latent sites of ``program(data)`` from a location-scale family whose scale changes from one ancestral
    draw of the program to the next: a scale set by other latents, the centred hierarchies that make funnels.
    Found from ``draws`` traces, not declared."""
    program = poutine.block(program, hide_types=["param"])
    with torch.random.fork_rng(devices=[]):  # the evidence's random stream is left as it was
        traces = [poutine.trace(program).get_trace(data) for _ in range(draws)]
    found = []
    for name, site in sample_sites(traces[0]).items():
        family = None if site["is_observed"] else _loc_scale(site["fn"])
        if family is None:
            continue
        scales = [family.scale] + [_loc_scale(trace.nodes[name]["fn"]).scale for trace in traces[1:]
                                   if name in trace.nodes and _loc_scale(trace.nodes[name]["fn"]) is not None]
        if len(scales) == draws and any(not torch.equal(scales[0], other) for other in scales[1:]):
            found.append(name)
    return found


def decentred(program, sites: list[str]):
    """``program`` with each of ``sites`` non-centred: ``{site}_decentered ~ family(0, 1)`` is the latent, and the
    site itself becomes a deterministic function of it (Pyro's ``poutine.reparam`` with ``LocScaleReparam``). A
    transformed site (``LogNormal(mu, tau)``) is first written as its base distribution and the transform
    (``TransformReparam``: ``{site}_base``), and the base is then non-centred."""
    names = set(sites)

    def config(msg):
        name = msg["name"]
        while name not in names and name.endswith("_base"):
            name = name[:-len("_base")]
        if name not in names:  # latent sites only (hierarchical_sites); conditioned ones are inverted
            return None
        fn = _unwrapped(msg["fn"])
        if isinstance(fn, torch.distributions.TransformedDistribution):
            return TransformReparam()
        return LocScaleReparam(centered=0.0) if type(fn) in LOC_SCALE else None

    def rewritten(data):
        return poutine.reparam(program, config=config)(data)

    return rewritten


@torch.no_grad()
def original_latents(rewritten_model, model, data: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Flat vectors ``z`` ``(K, dim)`` of the rewritten program's latents as flat vectors of ``model``'s own
    ``(K, model.latent_dim)``: the rewritten program runs on each, and its deterministic sites give the values."""
    values = rewritten_model.site_values(z)
    originals = []
    for k in range(len(z)):
        conditioned = poutine.condition(rewritten_model.full_program, data={name: value[k]
                                                                           for name, value in values.items()})
        trace = poutine.trace(poutine.block(conditioned, hide_types=["param"])).get_trace(data)
        originals.append(model.pack({name: trace.nodes[name]["value"] for name in model.latent_sites}))
    return torch.stack(originals)


@torch.no_grad()
def decentred_latents(rewritten_model, model, data: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`original_latents`: flat vectors ``z`` ``(K, model.latent_dim)`` of ``model``'s latents as
    the rewritten program's (its reparameterizations invert an observed value: ``eps = (theta - mu) / tau``)."""
    values = model.site_values(z)
    rewritten = []
    for k in range(len(z)):
        conditioned = poutine.condition(model.full_program, data={name: value[k] for name, value in values.items()})
        program = decentred(conditioned, rewritten_model.decentred_sites)
        trace = poutine.trace(poutine.block(program, hide_types=["param"])).get_trace(data)
        rewritten.append(rewritten_model.pack({name: trace.nodes[name]["value"]
                                               for name in rewritten_model.latent_sites}))
    return torch.stack(rewritten)
