r"""Quadrature: :math:`\log p(x) = \log \int p(x, z)\,dz` by the midpoint rule, for any target with one or two latent
dimensions per unit: a per-point model with a 1-D or 2-D :math:`z`, or a model with one or two global latents,
integrated in unconstrained coordinates (the log joint includes the Jacobian there). Below, a grid of :math:`n` points
per axis is :math:`n^d` points in :math:`d` dimensions, a cell's "area" its length where :math:`d = 1`.

The grid zooms onto each unit's posterior. The first box is the prior's median :math:`\pm 8` robust standard
deviations (interquartile range / 1.349) per axis, from 1,000 prior draws pooled over the units, taken from seed 0 on
a forked random stream: the same box at every call, and the run's other draws do not move. Each stage lays a midpoint
grid of :math:`n` points per axis on every unit's box, keeps the cells whose log joint is within 30 of the largest,
and the next box is their bounding box padded by two cells; where the kept cells reach a side of the box (the
posterior goes on beyond it), that side moves out by half the box's width instead. A unit is settled when no cell of
its grid's outermost rows was kept and the next box would shrink it less than :data:`SETTLED_SHRINK` times: its grid
then holds every cell within :math:`e^{-30}` of the peak, at a resolution its own posterior sets. Its estimate is
:math:`\log \sum_c p(x, z_c)\,A` over that grid's cells of area :math:`A`. Its error is the change from halving the
resolution (every other cell along each axis, of area :math:`2^d A`), a bound, which costs nothing. Where that is
above :data:`TIGHTEN_ABOVE`, it is replaced by the difference from the trapezoid rule on the same box (the cells'
inner corners, one more grid of :math:`(n-1)^d` points): on a Gaussian the two rules err by the same amount with
opposite signs, so the difference is about twice the midpoint rule's error, and it shrinks as fast as that error with
the resolution. Where the kept cells span fewer than :data:`RESOLVED_CELLS` in an axis, or the posterior's mass
fills fewer than :data:`RESOLVED_MASS_CELLS` cells per axis (a narrow peak beside a long tail kept within
:math:`e^{-30}`), the grid is too coarse for either alone: the trapezoid rule runs whatever the halving says, and the
error is the larger of the two. A unit not
settled after :data:`MAX_STAGES` stages keeps its last grid's estimate and has no error bar (NaN). A settled unit
whose error is above :data:`REFINE_ABOVE` (on a grid of :data:`REFINE_FROM` points per axis or more) is zoomed onto
and integrated again with twice the points per axis, its error there always the larger of the halving's and the
trapezoid rule's, up to :data:`REFINE_TIMES` times; the finer grid's estimate is kept where its error is smaller.

A grid counts each peak (a cell higher than its neighbours holding :data:`PEAK_SHARE` of the mass) apart: the mass
must fill :data:`RESOLVED_MASS_CELLS` per peak, and a unit whose grid does not resolve its posterior is integrated
again on finer grids whatever its error says. A mode narrower than the first grid's cells can fall between its points
while the zoom keeps another: :func:`with_other_modes` climbs from the first grid's local maxima outside each unit's
box, and integrates each mode found there in a box of its own. A unit still unresolved on the finest grid, its error
above :data:`REFINE_ABOVE` (two narrow modes in one box, a cell or two wide each), is split (:func:`split_modes`):
each mode climbed to inside its box is integrated in a box of its own, or the unit has no error bar.

The grid is scored in float64 wherever the model computes in it (a program whose tensors follow its data's dtype:
:meth:`~elbogap.model.target.Target.in_float64`); a model with float32 weights (a decoder) is scored in float32.

The grid points, weighted by :math:`p(x, z_c)\,A`, are kept as a weighted reference posterior where asked
(``keep_draws``): deterministic weights, whose moments are the quadrature's, not a sample's.
"""

import math

import torch

from elbogap.estimators import Estimator, EstimatorSettings, LogPxEstimate, register
from elbogap.inference.laplace import ascend, laplace_sds
from elbogap.inference.log_joint import ELEMENT_BUDGET

#: prior draws behind the first box
PRIOR_DRAWS = 1000
#: the first box's half-width, in the prior's robust standard deviations
PRIOR_WIDTHS = 8.0
#: cells whose log joint is within this of the largest are kept (the posterior's support at :math:`e^{-30}`)
KEPT_NATS = 30.0
#: the kept cells' bounding box is padded by this many cells: with one, a grid whose largest value fell a little
#: kept a cell at its edge and the box moved back and forth between stages
PAD_CELLS = 2
#: where the kept cells reach a side of the box, that side moves out by this share of the box's width: padded by two
#: cells a stage, a long tail (a decoder whose likelihood keeps rising far from the prior's mass, on a 2-D Fashion-MNIST
#: VAE) moved the side out 0.25 prior sds a stage and was never settled in MAX_STAGES stages
GROW_SHARE = 0.5
#: a box that the next would shrink less than this many times (in either axis) is settled: the kept cells then span
#: most of the grid (at 24 points, 12 or more cells: under 1.3 posterior sds each where the posterior is Gaussian)
SETTLED_SHRINK = 1.5
#: the fewest cells the kept region spans in each axis for the trapezoid rule's difference alone to be the error: on
#: peaked posteriors of random VAEs spanning fewer, it was up to 750 times too small (BENCHMARKS.md, "2-D quadrature")
RESOLVED_CELLS = 12
#: and the fewest cells per axis the posterior's mass fills, :math:`1 / \sum_c m_c^2` for its marginal :math:`m` on
#: each axis of the cells' weights :math:`w_c \propto p(x, z_c) A` (:func:`filled_cells`): a Uniform location seen on
#: the logit scale has a peak of sd 0.46 and a tail falling as exp(-v) over 30 units, which the kept cells span; at 24
#: points on a line the peak's mass lay in two cells, the halving agreed with the estimate by chance (stated 0.004)
#: and log p(x) read 0.8 nats low (``benchmarks/quadrature.py --one-latent``). A Gaussian of sd 0.75 cells fills
#: 2 sqrt(pi) 0.75 = 2.66 cells per axis
RESOLVED_MASS_CELLS = 2.66
#: a cell higher than its neighbours that holds this share of the mass is a peak, each of which must fill
#: RESOLVED_MASS_CELLS: two modes x = z^2 makes (a tester's program) inside one box, a cell or two each, read 0.065
#: nats high with a stated error of 0.003 where they counted as one posterior over their cells together
PEAK_SHARE = 0.01
#: a unit whose error from halving the resolution is above this many nats has it tightened by the trapezoid rule (one
#: more grid); below, it is left as that bound, too small to matter beside a per-point ELBO's Monte-Carlo error
TIGHTEN_ABOVE = 0.01
#: the most stages of zooming (a narrow posterior in a wide prior box zooms about n/5 times per stage)
MAX_STAGES = 12
#: a settled unit whose error is above this many nats is integrated again, zoomed from the prior's box as before, on
#: twice the points per axis, at most REFINE_TIMES times (24 points: up to 192): a skewed posterior (a Uniform(0, 5)
#: latent seen on the logit scale near its edge, a sharp side and a long tail) spread its kept cells over a box too
#: wide for 24 points, and a tester-style program read log p(x) 0.76 nats low on average (3.6 at worst) with a
#: stated error of 1.7; at 96 points it was within 0.001, its stated error 0.0012
REFINE_ABOVE = 0.01
REFINE_TIMES = 3
#: the fewest points per axis that are refined: a coarser grid was asked for as a cheap one (``--quadrature-points
#: 12`` in a quick study) and stays one grid, its error stated
REFINE_FROM = 24
#: the most places per unit that are climbed for a mode the zoom left out (:func:`with_other_modes`), and the Adam
#: steps of each climb
OTHER_STARTS = 4
OTHER_STEPS = 200
#: two climbs' ends closer than this many Laplace standard deviations along every axis are one mode (split_modes)
SAME_MODE_SDS = 4.0


def grid(lower: torch.Tensor, upper: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of a grid of ``num_points`` per axis on each box ``(units, d)``, ``d`` 1 or 2, shape
    ``(num_points**d, units, d)`` (the first axis slowest), and each box's cell area ``(units,)``."""
    steps = (torch.arange(num_points, dtype=lower.dtype, device=lower.device) + 0.5) / num_points
    width = upper - lower
    axis = lower.unsqueeze(0) + steps[:, None, None] * width.unsqueeze(0)  # (n, units, d)
    if lower.shape[-1] == 1:
        return axis, width[:, 0] / num_points
    first = axis[:, None, :, 0].expand(num_points, num_points, -1)
    second = axis[None, :, :, 1].expand(num_points, num_points, -1)
    return torch.stack([first, second], dim=-1).reshape(num_points * num_points, -1, 2), (width / num_points).prod(-1)


def every_other(log_w: torch.Tensor, num_points: int, dim: int) -> torch.Tensor:
    """The grid at half the resolution: every other cell along each axis of ``log_w`` ``(num_points**dim, units)``,
    each weighing :math:`2^d` cells' area."""
    cells = log_w.reshape(*(num_points,) * dim, -1)[(slice(None, None, 2),) * dim]
    return cells.reshape(-1, log_w.shape[-1]) + dim * math.log(2)


def prior_box(target) -> tuple[torch.Tensor, torch.Tensor]:
    """The first box ``(1, d)`` (lower, upper): the prior's median :math:`\\pm` :data:`PRIOR_WIDTHS` robust sds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same box for the same model at every call: a guide-independent estimate
        draws = target.start(-(-PRIOR_DRAWS // target.batch_size)).detach()
    draws = draws.reshape(-1, target.latent_dim).double()  # the units' draws pooled
    quartiles = torch.quantile(draws, torch.tensor([0.25, 0.5, 0.75], dtype=draws.dtype), dim=0)
    scale = (quartiles[2] - quartiles[0]) / 1.349
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    centre = quartiles[1]
    return [(centre + sign * PRIOR_WIDTHS * scale).to(target.dtype)[None] for sign in (-1, 1)]


def log_joint_on(target, points: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x, z)` of every unit at ``points`` ``(count, 1 or units, d)``, a chunk of points at a time."""
    chunk = max(1, ELEMENT_BUDGET // max(target.x.numel(), 1))  # each point is scored on every unit's rows
    return torch.cat([sum(target.log_joint(part)).reshape(part.shape[0], -1) for part in points.split(chunk)])


def kept_box(points: torch.Tensor, log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounding box ``(units, d)`` of the cell centres within :data:`KEPT_NATS` of each unit's largest."""
    keep = (log_p > log_p.max(0).values - KEPT_NATS)[..., None]
    infinity = torch.tensor(float("inf"), dtype=points.dtype, device=points.device)
    return torch.where(keep, points, infinity).amin(0), torch.where(keep, points, -infinity).amax(0)


def filled_cells(log_w: torch.Tensor, dim: int, n: int | None = None) -> torch.Tensor:
    """How many cells per axis each unit's posterior mass fills ``(units,)``: the effective number of cells,
    :math:`1 / \\sum_c w_c^2` for the weights ``log_w`` ``(count, units)`` normalized, to the power ``1 / dim``; NaN
    where no cell has mass. Given the grid's ``n`` points per axis, along each axis apart, the fewest: the effective
    number of cells of the mass's marginal on that axis, shared among that marginal's peaks (:func:`peaks`), and the
    root of the whole grid's count shared among its peaks, the fewest of these: two modes of one cell each do not read
    as one posterior over two cells, nor a posterior one cell wide in one axis as one over many in both (a tester's two
    modes, one cell wide across and eight along, read 0.09 nats high beside a stated 0.0096 where the root of the
    total, 2.8 cells, counted it resolved), nor a ridge narrow across a diagonal, which spreads along both axes."""
    weights = log_w.softmax(0)
    total = weights.pow(2).sum(0).reciprocal()
    if n is None:
        return total.pow(1 / dim)
    grid_weights = weights.reshape(*(n,) * dim, -1)
    fewest = (total / peaks(log_w, n, dim).clamp(min=1)).pow(1 / dim)
    for axis in range(dim):
        marginal = grid_weights.sum(tuple(other for other in range(dim) if other != axis)) if dim > 1 else grid_weights
        fewest = torch.minimum(fewest, marginal.pow(2).sum(0).reciprocal() / peaks(marginal.log(), n, 1).clamp(min=1))
    return fewest


def peaks(log_w: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """How many cells of each unit's grid ``(n**dim, units)`` are higher than their neighbours and hold at least
    :data:`PEAK_SHARE` of its mass ``(units,)``."""
    return (local_maxima(log_w, n, dim) & (log_w.softmax(0) >= PEAK_SHARE)).sum(0)


def scored_grid(target, lower: torch.Tensor, upper: torch.Tensor, num_points: int):
    """The midpoint grid on each box: its points ``(num_points**d, units, d)``, their log joint ``(num_points**d,
    units)`` and :math:`\\log` of each cell's area ``(units,)``."""
    units = target.batch_size
    points, area = grid(lower, upper, num_points)
    log_p = log_joint_on(target, points).expand(-1, units)  # the first, shared box scores every unit at once
    # a program that overflowed far out in the box: no mass there. +inf too: a site mapped onto its support underflows
    # to its edge there (a Gamma(0.3) rate of exp(-100) is 0 in float32, where its density is infinite), and
    # nan_to_num's default turned it into the largest float, which read log p(x) = 3.4e38 with an error of 0
    log_p = torch.nan_to_num(log_p, nan=-torch.inf, posinf=-torch.inf)
    return points.expand(-1, units, -1), log_p, area.log().expand(units)


# not inference mode: a climb (with_other_modes) differentiates through the units' selected rows, which a
# Multinomial's or Poisson's log_prob saves for its backward pass (an inference tensor cannot be)
@torch.no_grad()
def quadrature(target, settings: EstimatorSettings) -> LogPxEstimate:
    """Per unit of ``target``: the zoomed midpoint rule on ``settings.grid_points`` points per axis, and again at twice
    the points per axis on the units whose error is above :data:`REFINE_ABOVE`, up to :data:`REFINE_TIMES` times
    (see the module), in float64 where the model computes in it (:meth:`~elbogap.model.target.Target.in_float64`)."""
    target = target.in_float64()
    box = prior_box(target)
    first = scored_grid(target, *box, settings.grid_points)  # the first stage's grid, and other modes' starts
    estimate, (lower, upper, resolved) = _zoomed(target, settings.grid_points, settings.keep_draws, box=box,
                                                 first=first)
    points = settings.grid_points
    # a unit's kept draws are its one grid's: with several units, each keeps the first (as before refining)
    refinable = (settings.refine and settings.grid_points >= REFINE_FROM
                 and (not settings.keep_draws or target.batch_size == 1))
    for _ in range(REFINE_TIMES if refinable else 0):
        # a NaN error (unsettled) is not refined; an unresolved grid is, whatever its error says (two rules that
        # both straddle a peak may agree by chance)
        coarse = ((estimate.stderr > REFINE_ABOVE) | (~resolved & estimate.stderr.isfinite())).nonzero().flatten()
        if not len(coarse):
            break
        points *= 2
        finer, (finer_lower, finer_upper, finer_resolved) = _zoomed(target.select(coarse), points,
                                                                    settings.keep_draws, checked=True)
        # a finer grid that settled with a smaller error, or resolved what the coarser did not
        better = (finer.stderr < estimate.stderr[coarse]) | (finer_resolved & ~resolved[coarse]
                                                             & finer.stderr.isfinite())
        chosen = coarse[better]
        resolved[chosen] = finer_resolved[better]
        values, stderr = estimate.values.clone(), estimate.stderr.clone()
        values[chosen], stderr[chosen] = finer.values[better], finer.stderr[better]
        lower[chosen], upper[chosen] = finer_lower[better], finer_upper[better]
        info = {**estimate.info, "samples": estimate.info["samples"] + finer.info["samples"],
                "quadrature_refined": estimate.info.get("quadrature_refined", len(coarse)),  # the first round's
                "quadrature_points_most": points}
        if settings.keep_draws and bool(better.all()):  # one unit
            info.update(draws=finer.info["draws"], log_w=finer.info["log_w"])
        estimate = LogPxEstimate(values, stderr, info)
    if refinable:  # unresolved on the finest grid, its error still above REFINE_ABOVE: split into modes, or no bound
        unbounded = (~resolved & (estimate.stderr > REFINE_ABOVE)).nonzero().flatten()
        estimate = split_modes(target, estimate, lower, upper, settings.grid_points, unbounded)
    estimate = with_other_modes(target, estimate, lower, upper, settings.grid_points, first)
    unknown = int(estimate.stderr.isnan().sum())
    if unknown:  # a tester's Dirichlet(0.2, 0.3, 0.5) rows read 10-40 nats low, their note saying only "error is NaN"
        estimate.info["log_px_note"] = (
            f"quadrature has no error bar on {unknown} of {target.batch_size} units (it did not settle on a box in "
            f"{MAX_STAGES} stages, or a second mode's box met the first): their log p(x), and every mean and KL gap "
            "that includes them, may be far off; use --log-px ais")
    return estimate


def local_maxima(log_p: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Which cells of a grid's log joint ``(n**dim, units)`` are finite and at least as high as every neighbour
    (along the axes and diagonals)."""
    grid_values = log_p.reshape(*(n,) * dim, -1)
    padded = torch.nn.functional.pad(grid_values.movedim(-1, 0)[:, None], (1, 1) * dim, value=-math.inf)
    if dim == 1:
        highest = torch.nn.functional.max_pool1d(padded, 3, stride=1)
    else:
        highest = torch.nn.functional.max_pool2d(padded, 3, stride=1)
    return ((grid_values.movedim(-1, 0)[:, None] >= highest) & grid_values.movedim(-1, 0)[:, None].isfinite())[
        :, 0].movedim(0, -1).reshape(n**dim, -1)


def with_other_modes(target, estimate: LogPxEstimate, lower: torch.Tensor, upper: torch.Tensor,
                     n: int, first: tuple | None = None) -> LogPxEstimate:
    r"""``estimate`` with the posterior mass of each unit's other modes added: a mode narrower than the first grid's
    cells falls between its points, and the zoom kept the other one only.

    On the first box's grid, the cells higher than their neighbours that lie outside the unit's final box (at most
    :data:`OTHER_STARTS`, the highest first) are climbed by Adam (:func:`~elbogap.inference.laplace.ascend`). An end
    outside every box found so far, its log joint above the unit's mean density over its box less :data:`KEPT_NATS`, is
    a mode the grid missed: it is zoomed onto from a box about it that reaches half way to the nearest box, and its
    integral added. Its error adds to the unit's. Where the new box grows into another, the two would count the same
    mass twice: nothing is added, and the unit's error is NaN, as for a unit that did not settle. A unit's kept draws
    (a weighted reference posterior) stay its first box's.
    """
    dim = target.latent_dim
    points, log_p, _ = first if first is not None else scored_grid(target, *prior_box(target), n)
    outside = ((points < lower[None]) | (points > upper[None])).any(-1)
    candidate = local_maxima(log_p, n, dim) & outside & estimate.stderr.isfinite()[None]
    units = candidate.any(0).nonzero().flatten()
    if not len(units):
        return estimate
    values, stderr, info = estimate.values.clone(), estimate.stderr.clone(), dict(estimate.info)
    order = torch.where(candidate[:, units], log_p[:, units], -math.inf).argsort(0, descending=True)[:OTHER_STARTS]
    starts = points[:, units].gather(0, order[..., None].expand(-1, -1, dim))
    usable = candidate[:, units].gather(0, order)
    part = target.select(units)
    ends = ascend(part, starts, OTHER_STEPS)
    heights = sum(piece.double() for piece in part.log_joint(ends)).nan_to_num(nan=-math.inf, posinf=-math.inf)
    boxes = {int(unit): [(lower[unit], upper[unit])] for unit in units}
    found = 0
    for k in range(len(ends)):
        for j, unit in enumerate(units.tolist()):
            mode, peak = ends[k, j], values[unit] - (upper[unit] - lower[unit]).log().sum()
            if not usable[k, j] or heights[k, j] < peak - KEPT_NATS or math.isnan(float(stderr[unit])):
                continue
            if any(bool(((mode >= low) & (mode <= high)).all()) for low, high in boxes[unit]):
                continue  # on a mode already integrated
            reach = min(float((torch.maximum(low - mode, mode - high)).amax()) for low, high in boxes[unit]) / 2
            box = ((mode - reach)[None], (mode + reach)[None])
            extra, (new_lower, new_upper, _) = _zoomed(target.select(torch.tensor([unit])), n, False, box=box)
            overlaps = any(bool(((new_lower[0] < high) & (new_upper[0] > low)).all()) for low, high in boxes[unit])
            boxes[unit].append((new_lower[0], new_upper[0]))
            if overlaps:  # the same mass twice if added (a tester's two modes merging near x = 0 read up to 0.73 high)
                stderr[unit] = math.nan
                continue
            values[unit] = torch.logaddexp(values[unit], extra.values[0])
            stderr[unit] = stderr[unit] + extra.stderr[0]
            info["samples"] += extra.info["samples"]
            found += 1
    if found:
        info["quadrature_modes_added"] = found
    return LogPxEstimate(values, stderr, info)


def split_modes(target, estimate: LogPxEstimate, lower: torch.Tensor, upper: torch.Tensor, n: int,
                units: torch.Tensor) -> LogPxEstimate:
    r"""``estimate`` with each of ``units`` (unresolved on the finest grid, their error above :data:`REFINE_ABOVE`)
    integrated mode by mode, or left without an error bar.

    Two narrow modes in one box, a cell or two wide each on the finest grid, read 0.38-0.89 nats low with stated
    errors of 0.11-0.64 (``benchmarks/quadrature.py --one-latent``, far in the prior's tail). From up to
    :data:`OTHER_STARTS` local maxima of the unit's grid on its final box, Adam climbs to its modes; ends apart by
    more than :data:`SAME_MODE_SDS` of their Laplace sds are distinct. Each distinct mode is zoomed onto from a box
    reaching half way to the nearest other, and the unit's estimate is their sum, its error the sum of theirs, where
    every such box settles, resolves its posterior and meets no other. Otherwise the unit has no error bar (NaN).
    """
    if not len(units):
        return estimate
    values, stderr, info = estimate.values.clone(), estimate.stderr.clone(), dict(estimate.info)
    part, dim = target.select(units), target.latent_dim
    points, log_p, _ = scored_grid(part, lower[units], upper[units], n)
    order = torch.where(local_maxima(log_p, n, dim), log_p, -math.inf).argsort(0, descending=True)[:OTHER_STARTS]
    ends = ascend(part, points.gather(0, order[..., None].expand(-1, -1, dim)), OTHER_STEPS)
    for j, unit in enumerate(units.tolist()):
        one = target.select(torch.tensor([unit]))
        modes = distinct_modes(one, ends[:, j])
        stderr[unit] = math.nan
        if len(modes) < 2:
            continue
        pieces = []
        for k, mode in enumerate(modes):
            reach = min(float((mode - other).abs().amax()) for i, other in enumerate(modes) if i != k) / 2
            piece, (low, high, resolved) = _zoomed(one, n, False, checked=True, box=((mode - reach)[None],
                                                                                     (mode + reach)[None]))
            pieces.append((piece.values[0], piece.stderr[0], low[0], high[0], bool(resolved[0])))
            info["samples"] += piece.info["samples"]
        apart = all(not bool(((a[2] < b[3]) & (a[3] > b[2])).all()) for i, a in enumerate(pieces)
                    for b in pieces[i + 1:])
        if apart and all(resolved and math.isfinite(float(error)) for _, error, _, _, resolved in pieces):
            values[unit] = torch.logsumexp(torch.stack([value for value, *_ in pieces]), 0)
            stderr[unit] = sum(error for _, error, *_ in pieces)
            info["quadrature_modes_split"] = info.get("quadrature_modes_split", 0) + 1
    return LogPxEstimate(values, stderr, info)


def distinct_modes(target, ends: torch.Tensor) -> list[torch.Tensor]:
    """The ends ``(count, d)`` of climbs on ``target``'s one unit that are distinct modes: finite, and apart from each
    kept one by more than :data:`SAME_MODE_SDS` of the larger Laplace sd along some axis."""
    heights = sum(piece.double() for piece in target.log_joint(ends[:, None])).reshape(-1)
    kept = []
    for index in heights.argsort(descending=True).tolist():
        if not math.isfinite(float(heights[index])):
            continue
        end = ends[index]
        sd = laplace_sds(target, end[None])
        if all(bool(((end - mode).abs() > SAME_MODE_SDS * torch.maximum(sd[0], mode_sd).to(end.dtype)).any())
               for mode, mode_sd in kept):
            kept.append((end, sd[0]))
    return [mode for mode, _ in kept]


def _zoomed(target, n: int, keep_draws: bool, checked: bool = False, box=None,
            first: tuple | None = None) -> tuple[LogPxEstimate, tuple]:
    """Each unit of ``target`` zoomed onto and integrated on ``n`` points per axis (see the module), from the prior's
    box or ``box`` (lower, upper, each ``(units, d)``); ``checked``: its error the larger of the halving's and the
    trapezoid rule's difference on every unit. With it, each unit's final box (lower, upper) and whether its grid
    resolved its posterior (:data:`RESOLVED_CELLS`, :data:`RESOLVED_MASS_CELLS` per peak). ``first``: the grid
    (:func:`scored_grid`) of the first box on ``n`` points, where the caller scored it already."""
    units, dim = target.batch_size, target.latent_dim
    lower, upper = prior_box(target) if box is None else box
    nan = torch.full((units,), float("nan"), dtype=lower.dtype, device=lower.device)
    estimate, coarser = nan.clone(), nan.clone()
    settled = torch.zeros(units, dtype=torch.bool, device=lower.device)
    resolved = settled.clone()
    final_lower, final_upper = lower.expand(units, -1).clone(), upper.expand(units, -1).clone()
    if keep_draws:
        final_points = torch.zeros(n**dim, units, dim, dtype=lower.dtype, device=lower.device)
        final_log_w = torch.full((n**dim, units), -math.inf, dtype=lower.dtype, device=lower.device)
    active, stages = torch.arange(units, device=lower.device), 0
    while len(active):  # the units not yet settled, each stage on their own boxes
        stages += 1
        part = target if len(active) == units else target.select(active)
        points, log_p, log_area = first if stages == 1 and first is not None else scored_grid(part, lower, upper, n)
        kept_lower, kept_upper = kept_box(points, log_p)
        cell = (upper - lower) / n
        # no cell of the outermost rows kept: the box holds every cell within KEPT_NATS of the peak
        inside = ((kept_lower > lower + cell) & (kept_upper < upper - cell)).all(-1)
        next_lower, next_upper = kept_lower - PAD_CELLS * cell, kept_upper + PAD_CELLS * cell
        next_lower = torch.where(kept_lower > lower + cell, next_lower, lower - GROW_SHARE * (upper - lower))
        next_upper = torch.where(kept_upper < upper - cell, next_upper, upper + GROW_SHARE * (upper - lower))
        done = inside & (((upper - lower) / (next_upper - next_lower)).amax(-1) < SETTLED_SHRINK)
        ending = done | (stages == MAX_STAGES)
        which, count = active[ending], len(active)
        log_w = log_p + log_area
        estimate[which] = torch.logsumexp(log_w, 0)[ending]
        coarser[which] = torch.logsumexp(every_other(log_w, n, dim), 0)[ending]
        spanned = ((kept_upper - kept_lower) / cell).amin(-1) + 1 >= RESOLVED_CELLS
        resolved[which] = (spanned & (filled_cells(log_w, dim, n) >= RESOLVED_MASS_CELLS))[ending]
        settled[which] = done[ending]
        final_lower[which], final_upper[which] = lower.expand(count, -1)[ending], upper.expand(count, -1)[ending]
        if keep_draws:
            final_points[:, which], final_log_w[:, which] = points[:, ending], log_w[:, ending]
        active, lower, upper = active[~ending], next_lower[~ending], next_upper[~ending]
    # the error: the change from halving the resolution, free; where that is above TIGHTEN_ABOVE, the trapezoid rule on
    # the same box (the cells' inner corners; the edges hold no mass), whose error is the midpoint rule's with the
    # opposite sign for a Gaussian, so the difference is about twice either's
    stderr = (estimate - coarser).abs()
    # a posterior over fewer cells than RESOLVED_CELLS (or its mass in fewer than RESOLVED_MASS_CELLS): halving may hit
    # on the estimate by chance (108 times too small at 16 points, measured), so the trapezoid rule is run there
    # whatever the halving says
    tighten = (settled & ((stderr > TIGHTEN_ABOVE) | ~resolved | checked)).nonzero().flatten()
    if len(tighten):
        cell = (final_upper - final_lower)[tighten] / n
        _, log_p, log_area = scored_grid(target.select(tighten), final_lower[tighten] + cell / 2,
                                         final_upper[tighten] - cell / 2, n - 1)
        trapezoid = (estimate[tighten] - torch.logsumexp(log_p + log_area, 0)).abs()
        # and there the two rules' errors need not oppose: the larger of the two differences
        larger = torch.maximum(trapezoid, stderr[tighten])
        stderr[tighten] = larger if checked else torch.where(resolved[tighten], trapezoid, larger)
    stderr = torch.where(settled, stderr, float("nan"))
    info = {"samples": stages * n**dim + ((n - 1) ** dim if len(tighten) else 0)}
    if keep_draws:
        info.update(draws=final_points, log_w=final_log_w)
    return LogPxEstimate(estimate, stderr, info), (final_lower, final_upper, resolved)


register(Estimator("quadrature", "quadrature (midpoint rule on a grid zoomed onto the posterior, "
                                 "{log_px_samples} points in all)", quadrature,
                   applies=lambda target: target.latent_dim in (1, 2), requirement="a 1-D or 2-D latent space",
                   sampled=False, systematic=True,
                   caveat="The quadrature's error of log p(x) (the ± of one seed, the (s.e.) of several) is its "
                          "discretization error, a bound on each point averaged over the points (not a Monte-Carlo "
                          "error): a grid's errors share their sign from point to point"))
