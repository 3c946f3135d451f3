r"""What the figures of a per-point study show beyond its records, computed once at the end of each run and saved
as ``figures.pt`` in its directory, so that drawing (:mod:`elbogap.plots`) never loads a model or fits a guide.

- For 1-D and 2-D latents (``posteriors.png``): for the first ``POSTERIOR_POINTS`` test points, the true posterior
  :math:`\log p(z \mid x)` on a grid around its mass (a line of points for one latent; normalized on the grid), and
  q's log density on the same grid, or 400 draws of q where its density is known only at its own draws. A
  per-datapoint family is first fitted to these points, in one refit, with the model held fixed (its training never
  saw the test points).
- For images (``images.png``): the first ``IMAGE_POINTS`` test images, their reconstructions
  :math:`\mathbb{E}[x \mid z]` with :math:`z \sim q(z \mid x)` (amortized families), and the means of as many prior
  draws.

Its draws come from the run's ``figure_draws`` stream, after the evaluation, whose numbers they leave alone.
"""

import math
from pathlib import Path

import torch
from pyro import poutine

from elbogap import streams
from elbogap.checkpoint import save_checkpoint
from elbogap.inference import log_joint, refit_guide
from elbogap.inference.bdmc import simulate
from elbogap.inference.evaluation import sample_latents
from elbogap.inference.log_joint import observed_sites, split_latents
from elbogap.sites import constrain, latent_transforms

#: the file in a run's directory, and how many points each figure shows
FILE = "figures.pt"
POSTERIOR_POINTS, IMAGE_POINTS, Q_DRAWS, GRID_SIZE = 4, 10, 400, 80


def image_shape_of(data) -> tuple[int, int] | None:
    """The images' (height, width) where the data set's rows are images; None otherwise."""
    if data.image_shape is not None:
        return data.image_shape
    side = math.isqrt(data.data_dim)
    return (side, side) if side * side == data.data_dim and data.is_binary else None


@torch.no_grad()
def posterior_grid(model, x: torch.Tensor, size: int = GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A grid around the posterior of one point, ``(size, size, 2)`` for 2-D latents and ``(size, 1)`` for one, and
    the log posterior on it, normalized as a density over the grid's cells."""
    dim = model.latent_dim
    coarse = torch.linspace(-6, 6, 121, device=x.device)
    zz = torch.stack(torch.meshgrid(*[coarse] * dim, indexing="ij"), -1).reshape(-1, 1, dim)
    log_p = sum(log_joint(model, x, zz)).squeeze(-1)
    keep = zz[log_p > log_p.max() - 12, 0]
    lo, hi = keep.min(0).values - 0.3, keep.max(0).values + 0.3
    axes = [torch.linspace(float(lo[d]), float(hi[d]), size, device=x.device) for d in range(dim)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    log_p = sum(log_joint(model, x, grid.reshape(-1, 1, dim))).reshape(grid.shape[:-1])
    cell = ((hi - lo) / (size - 1)).prod()  # the spacing of linspace's points
    return grid, log_p - torch.logsumexp(log_p.flatten(), 0) - cell.log()


@torch.no_grad()
def posterior_panels(model, guide, points: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Each point's grid, true log posterior, and q's log density on the grid (or q's draws); see the module. A
    per-datapoint family gets parameters for these points, fitted to the frozen model in one refit (each point's
    own parameters take their own gradient)."""
    fitted = guide
    if not guide.amortized:
        fitted = guide.fresh(len(points))
        with torch.enable_grad():
            refit_guide(model, fitted, points)
    return [posterior_panel(model, fitted, points[row:row + 1], row) for row in range(len(points))]


@torch.no_grad()
def posterior_panel(model, fitted, point: torch.Tensor, row: int) -> dict[str, torch.Tensor]:
    """One point's panel, from ``fitted`` (a per-datapoint family's parameters for the points, ``row`` this one's)."""
    grid, log_posterior = posterior_grid(model, point)
    index = torch.tensor([row], device=point.device)
    panel = {"grid": grid.cpu(), "log_posterior": log_posterior.cpu()}
    if fitted.density_anywhere:
        q = fitted.distribution(point, index)
        panel["log_q"] = q.log_prob(grid.reshape(-1, 1, grid.shape[-1])).reshape(grid.shape[:-1]).cpu()
    else:
        panel["q_draws"] = sample_latents(model, fitted, point, Q_DRAWS, index)[:, 0].cpu()
    return panel


def likelihood_mean(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathbb{E}[x \\mid z]`, the mean of the model's observed site at latents ``z`` (on the real line)."""
    values, _ = constrain(model, split_latents(model, z))
    trace = poutine.trace(poutine.condition(model.model, data=values)).get_trace(x)
    return trace.nodes[observed_sites(model)[0]]["fn"].mean


@torch.no_grad()
def image_rows(model, guide, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reconstructions of the images ``x`` (amortized families) and the means of as many prior draws."""
    rows = {}
    if guide.amortized:
        rows["reconstruction"] = likelihood_mean(model, x, sample_latents(model, guide, x, 1)[0]).cpu()
    rows["prior_sample"] = likelihood_mean(model, x, simulate(model, x, len(x))[1]).cpu()
    return rows


def save_figure_data(run_dir: str | Path, model, guide, data, seed: int) -> Path | None:
    """Compute what ``posteriors.png`` and ``images.png`` show for this run and save it (``FILE``); the path, or None
    where neither figure applies."""
    state = {}
    with torch.random.fork_rng(devices=[data.test.device] if data.test.is_cuda else []):
        streams.seeded("figure_draws", seed)
        if model.latent_dim in (1, 2) and len(data.test):
            points = data.test[:POSTERIOR_POINTS]
            state["posteriors"] = {"panels": posterior_panels(model, guide, points),
                                   "constrained": sorted(latent_transforms(model))}
        shape = image_shape_of(data)
        if shape is not None and len(data.test):
            images = data.test[:IMAGE_POINTS]
            state["images"] = {"data": images.cpu(), "shape": list(shape), **image_rows(model, guide, images)}
    if not state:
        return None
    path = Path(run_dir) / FILE
    save_checkpoint(path, state)
    return path
