r"""Importance weights: the estimate :math:`\log \frac1K \sum_k w_k`, an error bar that survives heavy tails, k-hat.

IWAE, AIS (forward and reverse) and the evidence of global models all report the log of a mean of
:math:`K` independent weights. The delta-method standard error,
:math:`\sqrt{(K \sum w^2 / (\sum w)^2 - 1) / K}`, reads the weights' variance off the sample; when
their tail is heavy (few AIS temperatures, a narrow guide) the sample rarely holds the weights
that make the variance, and it comes out two to four times too small. :func:`log_mean_exp_stderr`
instead measures how the estimate itself varies: the log-mean over disjoint groups of
:math:`k = K/2, K/4, \dots` weights, whose spread is seen directly, and how that spread shrinks with
:math:`k`, extrapolated to :math:`K`. A mean over points combines each point's jackknife error instead
(:func:`jackknife_stderr`), right on average whatever the tails, where the group spread is
inflated by a long left tail (stuck AIS chains).

The group spread reads a variance off 2, 4 and 8 group log-means, so it is itself a noisy estimate, with
about 6 degrees of freedom whatever :math:`K` (:func:`group_spread_dof`): one point's 95% interval is
:math:`\pm t_{0.975,\nu}` standard errors, 2.47 rather than 1.96 (:func:`interval_halfwidth`).
"""

import functools
import math
from typing import NamedTuple

import torch
from scipy import stats

#: group sizes K/2, K/4, ... whose spread :func:`log_mean_exp_stderr` measures
LEVELS = 3
#: the fewest columns (points evaluated together) on which :func:`_curvature_factor` fits the :math:`1/k^2` term
CURVATURE_COLUMNS = 4
#: columns whose group variance is over this many times the median column's are left out of that fit
OUTLYING_SCALE = 4.0
#: the fewest weights a PSIS tail fit needs (:func:`pareto_khat`)
TAIL_SAMPLES = 25
#: the fewest weights on which one column's k-hat decides that it has no standard error: on 64 log-normal weights of
#: log-sd 0.5 (a finite variance) k-hat exceeds 0.5 12% of the time, on 100 4%, on 256 never (2000 columns each)
DECLINE_SAMPLES = 100


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \frac1K \sum_k w_k` over the first dimension of ``log_w`` ``(K, *batch)``."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def log_mean_exp_stderr(log_w: torch.Tensor, levels: int = LEVELS, pool: torch.Tensor | None = None) -> torch.Tensor:
    r"""Standard error of :math:`\hat L_K = \log \frac1K \sum_k w_k` per column of ``log_w`` ``(K, *batch)``.

    The :math:`K` weights are split into :math:`g = K/k` disjoint groups of :math:`k` for
    :math:`k = K/2, K/4, K/8` (``levels`` sizes), and the log-mean of each group is taken; their
    sample variance :math:`v_k` (:math:`g - 1` degrees of freedom) estimates
    :math:`\mathrm{Var}\,\hat L_k` directly, heavy tails or not. The variance falls as a power of
    :math:`k`, :math:`k^{-1}` once the weights' variance is finite and well sampled and more slowly
    before; the power :math:`s \in [-1, 0]` is fitted by weighted least squares to
    :math:`\log \bar v_k`, the group variances pooled over the columns (the points evaluated
    together), and each column's :math:`v_k` is carried to :math:`K`:

    .. math::

        \widehat{\mathrm{Var}}\,\hat L_K = \frac{\sum_k (g_k - 1)\, v_k\, (K/k)^{s}}{\sum_k (g_k - 1)}.

    Where the variances fall at least as fast as :math:`1/k` (:math:`s = -1`), a left tail of :math:`\log w`
    (AIS chains that fell behind) leaves a :math:`1/k^2` term in the smallest groups, which carrying at :math:`1/k`
    would keep. One point's error was 1.4 times its spread on AIS of a positive latent (BENCHMARKS, fifth pass).
    On 4 or more columns that term is fitted and taken out (:func:`_curvature_factor`). On fewer it is not: a fit
    to one or two points' variances fires on heavy right tails whose slope reads -1 by chance, and the error stays
    on the safe side. Chains stuck far below the others (a gap of 10 nats) are beyond a second-order term, and
    their error stays about twice the spread.

    Only the largest groups are used: a group of a few AIS chains is dragged down by a chain
    that got stuck (a long left tail of :math:`\log w`) that barely moves :math:`\hat L_K`, and
    the smallest groups would carry that to :math:`K` as spurious noise. Checked against repeats
    (``benchmarks/coverage.py``, ``tests/inference/test_weights.py``): within about 10% of the
    spread of a mean over points for log-normal weights of log-sd up to 3 at any :math:`K \ge 8`,
    where the delta method is up to 3x too small. With fewer than 4 weights no power can be
    fitted and :math:`s = 0`, a conservative error; with one weight there is no error bar: NaN.
    ``pool`` (a mask over the columns) splits the fit of :math:`s` in two, one over the columns it
    marks and one over the others: a point whose weights have a light tail would otherwise be
    carried at the slow rate of heavy-tailed ones (1.6x too large an error, measured), and a heavy
    one at the fast rate of light ones.

    A fit that would rest on one column (one point evaluated alone, one data set's evidence) is not made:
    three noisy variances fit any power, and the error had 1-1.4 degrees of freedom for the 5.8 its interval
    assumes, with 1.6 times the variance it claimed. One column is carried at :math:`s = -1`, which is right
    wherever the variance is finite (5.4-5.7 degrees of freedom measured for light tails, BENCHMARKS). With
    :data:`DECLINE_SAMPLES` weights or more, a column whose PSIS :math:`\hat k` is above 0.5 has an infinite
    variance and no standard error at all: NaN. Pareto weights of shape 0.7 are caught so 68-84% of the time (100-512
    weights); the rest keep an error that covers too little, as any error read off their sample would.
    """
    num = log_w.shape[0]
    if num < 2:
        return _no_error_bar(log_w)
    log_w = log_w.double()
    sizes = _group_sizes(num, levels)
    variances, dofs = [], []
    for size in sizes:
        groups = num // size
        grouped = log_w[:groups * size].reshape(groups, size, *log_w.shape[1:]).transpose(0, 1)
        means = log_mean_exp(grouped)  # (groups, *batch): one estimate per disjoint group
        variances.append(means.var(0))
        dofs.append(groups - 1)
    every = torch.ones_like(variances[0], dtype=torch.bool)
    pools = [pool, ~pool] if pool is not None and bool(pool.any()) and not bool(pool.all()) else [every]
    result = torch.zeros_like(variances[0])
    for columns in pools:
        chosen = [var[columns] for var in variances]
        # one column's three variances fit any power by chance (its error then had 1-1.4 degrees of freedom and 1.6
        # times the variance it claims, BENCHMARKS): it is carried at the rate of a central limit, 1/k
        slope = -1.0 if int(columns.sum()) == 1 else _slopes(sizes, _pooled(chosen), dofs)
        total = sum(dof * var * (num / size) ** slope for size, var, dof in zip(sizes, variances, dofs, strict=True))
        if slope == -1.0:
            total = total * _curvature_factor(sizes, chosen, dofs)
        result = torch.where(columns, total / sum(dofs), result)
    if result.numel() == 1 and num >= DECLINE_SAMPLES:  # one column: no other point's tail to pool with
        result = torch.where(pareto_khat(log_w.reshape(num, 1)).reshape(result.shape) > FINITE_VARIANCE_KHAT,
                             math.nan, result)
    return result.sqrt()


@functools.cache
def group_spread_dof(num: int, levels: int = LEVELS) -> float:
    r"""Degrees of freedom :math:`\nu` of :func:`log_mean_exp_stderr`'s variance from ``num`` weights.

    Where the weights' spread is small (the regime of a central limit), each group log-mean is the mean of
    its :math:`\log w` and the reported variance is a quadratic form :math:`\epsilon^\top A \epsilon` of
    the standardized :math:`\log w`, carried to :math:`K` at the rate :math:`k^{-1}`:
    :math:`A = \sum_k c_k M_k^\top P_k M_k`, with :math:`M_k` the group means, :math:`P_k` their centring
    and :math:`c_k` the level's share. Satterthwaite's
    :math:`\nu = 2\,\mathrm{E}[V]^2 / \mathrm{Var}\,V = \mathrm{tr}(A)^2 / \mathrm{tr}(A^2)` then follows exactly:
    5.8 for any :math:`K` a multiple of 8 (groups of 2, 4 and 8), up to 9 for :math:`K = 12`, 1 for
    :math:`K = 2`; heavy tails leave fewer. Infinite with fewer than 2 weights (no error bar to widen).
    The traces need only the overlaps of groups, :math:`M_k M_l^\top`, never a :math:`K \times K` matrix.
    """
    if num < 2:
        return math.inf
    sizes = _group_sizes(num, levels)
    total_dof = sum(num // size - 1 for size in sizes)
    parts = []  # per level: its weight c_k, the centred group means' Gram factor, and each group's span
    for size in sizes:
        groups = num // size
        starts = torch.arange(groups, dtype=torch.float64) * size
        centring = torch.eye(groups, dtype=torch.float64) - 1.0 / groups
        weight = (size / num) / total_dof  # share (g-1)/sum(g-1), carried at the rate 1/k, over the g-1 of var()
        parts.append((weight, centring, starts, float(size)))
    trace = sum(weight * (len(starts) - 1) / size for weight, _, starts, size in parts)  # tr(M P M^T) = (g-1)/k
    square = 0.0
    for weight_a, centring_a, starts_a, size_a in parts:
        for weight_b, centring_b, starts_b, size_b in parts:
            ends_a, ends_b = starts_a + size_a, starts_b + size_b
            overlap = (torch.minimum(ends_a[:, None], ends_b[None]) - torch.maximum(starts_a[:, None], starts_b[None]))
            cross = overlap.clamp(min=0.0) / (size_a * size_b)  # M_a M_b^T
            square += weight_a * weight_b * float(torch.trace(centring_a @ cross @ centring_b @ cross.T))
    return float(trace**2 / square)


def interval_halfwidth(stderr, dof: float | torch.Tensor, level: float = 0.95):
    r"""Half the width of a ``level`` interval, :math:`t_{(1+\text{level})/2,\,\nu}` times ``stderr``.

    Student's t quantile (SciPy's) for an error with ``dof`` degrees of freedom, the normal one where
    ``dof`` is infinite (or None): an error read off few independent pieces is itself uncertain, and
    :math:`\pm 1.96` of it covers less than 95% (about 90% at :math:`\nu = 6`). ``dof`` may be a tensor, one per
    point of ``stderr`` (a split whose points two estimators gave).
    """
    quantile = (1 + level) / 2
    if isinstance(dof, torch.Tensor):
        return torch.as_tensor(stats.t.ppf(quantile, dof.double().cpu().numpy()), device=stderr.device) * stderr
    if dof is None or math.isinf(dof):
        return float(stats.norm.ppf(quantile)) * stderr
    return float(stats.t.ppf(quantile, dof)) * stderr


def jackknife_stderr(log_w: torch.Tensor) -> torch.Tensor:
    r"""Jackknife standard error of :math:`\hat L_K = \log \frac1K \sum_k w_k` per column of ``log_w`` ``(K, *batch)``.

    With :math:`S = \sum_k w_k`, the estimate without weight :math:`i` is
    :math:`\hat L_{-i} = \log \frac{S - w_i}{K - 1}`, and

    .. math::

        \widehat{\mathrm{Var}}\,\hat L_K = \frac{K - 1}{K} \sum_i (\hat L_{-i} - \bar L_{-\cdot})^2.

    Its root mean square matches the spread over repeats whatever the tails: within about 5% for
    log-normal weights of log-sd up to 3 and for stuck AIS chains (a long left tail, which
    inflates the spread of group log-means two- to ninefold), at :math:`K` from 8 to 1000. So a
    mean over points, whose variance is the sum of the points', takes its error from these
    (``benchmarks/coverage.py``). One point's own interval does not: under a heavy right tail the
    jackknife is small exactly when the large weight was not drawn, and the interval covers less
    than its level (75-88% at 8-32 AIS chains, at +- 1.96), where :func:`log_mean_exp_stderr`'s covers 89-92%
    (``benchmarks/point_intervals.py``). With one weight there is no error bar: NaN.
    """
    num = log_w.shape[0]
    if num < 2:
        return _no_error_bar(log_w)
    log_w = log_w.double()
    total = torch.logsumexp(log_w, 0, keepdim=True)
    largest = log_w == log_w.max(0, keepdim=True).values
    # leaving out the largest weight by subtraction would cancel catastrophically; sum the others instead
    first = largest & (largest.cumsum(0) == 1)
    without_largest = torch.logsumexp(log_w.masked_fill(first, -math.inf), 0, keepdim=True)
    share = (log_w - total).exp().clamp(max=1.0)
    rest = torch.where(largest, without_largest, total + torch.log1p(-share))  # log(S - w_i)
    left_out = rest - math.log(num - 1)  # \hat L_{-i}
    return ((num - 1) / num * (left_out - left_out.mean(0)).pow(2).sum(0)).sqrt()


def errors_a_mean_combines(stderr: torch.Tensor, jackknife: torch.Tensor) -> torch.Tensor:
    """Per point, the error that a mean over these points combines: each point's jackknife error, or, for a mean over
    one point, that point's own (the group spread's), since one point's jackknife interval covers too little under a
    heavy right tail (75-88%, BENCHMARKS)."""
    return stderr if len(stderr) == 1 else jackknife


def mean_error(errors: torch.Tensor, systematic: bool | torch.Tensor = False,
               bias_bound: torch.Tensor | None = None) -> float:
    r"""The error of a mean over points from their own errors :math:`s_i`: :math:`\sqrt{\sum_i s_i^2} / n` where they
    are independent random errors, :math:`\frac1n \sum_i s_i` where they are ``systematic`` (deterministic bounds,
    which may all share one sign); NaN if any is NaN, or over no points. ``systematic`` may be a mask per point (a
    quadrature's bounds beside AIS's errors on the points it left): then the bounds add, the random errors add in
    quadrature, and the two parts add, over :math:`n`. ``bias_bound``, per point, is a bound beside a random error
    (AIS from the modes): its mean adds whole."""
    errors = errors.double()
    if not len(errors):
        return math.nan
    systematic = torch.as_tensor(systematic, device=errors.device).expand(errors.shape)
    bound = 0.0 if bias_bound is None else float(bias_bound.double().mean())
    return float((errors[systematic].sum() + errors[~systematic].pow(2).sum().sqrt()) / len(errors)) + bound


def _group_sizes(num: int, levels: int) -> list[int]:
    """The group sizes K/2, K/4, ... (``levels`` of them, at least 1), largest first."""
    return sorted({num // 2**j for j in range(1, levels + 1) if num // 2**j >= 1}, reverse=True)


def _no_error_bar(log_w: torch.Tensor) -> torch.Tensor:
    """NaN per column: one weight has no spread to read an error from."""
    return torch.full(log_w.shape[1:], float("nan"), dtype=torch.float64, device=log_w.device)


def _pooled(variances: list[torch.Tensor]) -> list[float]:
    """Each level's group variance, averaged over the columns that have one (NaN where none has)."""
    return [float(var[~var.isnan()].mean()) if bool((~var.isnan()).any()) else math.nan for var in variances]


def _weighted_fit(x: list[float], y: list[float], dofs: list[int]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through ``(x, y)``, weighted by ``dofs``."""
    x_, y_ = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    w = torch.tensor(dofs, dtype=torch.float64)
    x_mean, y_mean = (w * x_).sum() / w.sum(), (w * y_).sum() / w.sum()
    slope = (w * (x_ - x_mean) * (y_ - y_mean)).sum() / (w * (x_ - x_mean).pow(2)).sum()
    return float(y_mean - slope * x_mean), float(slope)


def _slopes(sizes: list[int], pooled: list[float], dofs: list[int]) -> float:
    """The power of k by which the pooled group variances fall, in [-1, 0]."""
    if len(sizes) < 2 or any(math.isnan(v) for v in pooled):
        return 0.0
    if min(pooled) <= 0.0:  # equal weights (an exact proposal): no noise to extrapolate
        return -1.0
    _, slope = _weighted_fit([math.log(size) for size in sizes], [math.log(v) for v in pooled], dofs)
    return min(max(slope, -1.0), 0.0)


def _curvature_factor(sizes: list[int], variances: list[torch.Tensor], dofs: list[int]) -> float:
    r"""A factor for the group variances carried at :math:`1/k` that takes out most of their :math:`1/k^2` term.

    :math:`\mathrm{Var} \log \bar w_k = c^2/k + (\tfrac52 c^4 - \gamma)/k^2 + O(k^{-3})`, with :math:`c^2` and
    :math:`\gamma` the second and third central moments of :math:`w/\mathrm{E}\,w` (a Taylor expansion of the
    log). A left tail of :math:`\log w` (AIS chains that fell behind) makes :math:`\tfrac52 c^4 - \gamma` large,
    and groups of a few weights keep it. :math:`k\,\bar v_k = a + b/k` is fitted to the group variances averaged
    over the columns, weighted by the levels' degrees of freedom. The fit leaves out columns whose variance is over
    :data:`OUTLYING_SCALE` times the median column's: a few points of large variance would otherwise set the
    curvature of every point, and shrink the errors of light-tailed ones (16 light points beside 4 left-tailed ones
    of twice the scale: sd / s.e. from 1.00 to 1.13; 1.03 with the rule). Each level is then carried to the
    largest group size :math:`k_1` as :math:`(a + b/k_1)/(a + b/k)`, and from there at :math:`1/k`, which keeps the
    term's share at :math:`k_1`, on the safe side. The factor returned is the ratio of the corrected levels to the
    uncorrected ones. It is 1 where :math:`b \le 0`, with fewer than three levels (a line through two points fits
    anything), or with fewer than :data:`CURVATURE_COLUMNS` columns that have every level. One factor for every
    column keeps each level's share, and so :func:`group_spread_dof`.
    """
    scale = sum(dof * var * size for size, var, dof in zip(sizes, variances, dofs, strict=True)) / sum(dofs)
    valid = scale.isfinite()
    if len(sizes) < 3 or int(valid.sum()) < CURVATURE_COLUMNS:
        return 1.0
    typical = valid & (scale <= OUTLYING_SCALE * scale[valid].median())
    scaled = [float(var[typical].mean()) * size for size, var in zip(sizes, variances, strict=True)]  # k v_k
    intercept, curvature = _weighted_fit([1.0 / size for size in sizes], scaled, dofs)
    if curvature <= 0.0 or intercept <= 0.0:
        return 1.0
    top = sizes[0]
    carried = [dof * v for v, dof in zip(scaled, dofs, strict=True)]  # each level at the rate 1/k
    corrected = [c * (intercept + curvature / top) / (intercept + curvature / size)
                 for c, size in zip(carried, sizes, strict=True)]
    return sum(corrected) / sum(carried)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's :math:`(\\sum w)^2 / \\sum w^2` per column of ``log_w`` ``(K, *batch)``."""
    log_w = log_w.double()
    return (2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)).exp()


class ImportanceEstimate(NamedTuple):
    """:math:`\\log \\frac1K \\sum_k w_k`, its standard error, Kish's effective sample size and the jackknife's
    standard error (what a mean over columns combines), per column."""

    log_mean: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    jackknife: torch.Tensor


def importance_estimate(log_w: torch.Tensor, pool: torch.Tensor | None = None) -> ImportanceEstimate:
    """The estimate, its standard error (:func:`log_mean_exp_stderr`, its rate fitted on the columns ``pool``) and
    the ESS of log-weights ``(K, *batch)``."""
    return ImportanceEstimate(log_mean_exp(log_w), log_mean_exp_stderr(log_w, pool=pool).to(log_w.dtype),
                              effective_sample_size(log_w).to(log_w.dtype), jackknife_stderr(log_w).to(log_w.dtype))


#: k-hat above which the weights' variance is infinite by their tail fit (PSIS, arXiv:1507.02646): no central
#: limit, so no standard error
FINITE_VARIANCE_KHAT = 0.5


def proposal_estimate(log_w: torch.Tensor) -> tuple[ImportanceEstimate, torch.Tensor]:
    """The importance estimate of log-weights ``(K, *batch)`` of a proposal (q's draws, of every kind of model) and
    each column's PSIS k-hat, the rate of the group spread fitted apart on the columns whose k-hat says their
    variance is infinite (:func:`log_mean_exp_stderr`'s ``pool``; NaN, too few draws for a tail, counts as finite)."""
    khat = pareto_khat(log_w)
    return importance_estimate(log_w, pool=~(khat > FINITE_VARIANCE_KHAT)), khat


def khat_threshold(num_samples: int) -> float:
    r"""The :math:`\hat k` above which an importance estimate from ``num_samples`` weights is unreliable [1].

    :math:`\min(1 - 1/\log_{10} S, 0.7)`: with fewer samples, a smaller :math:`\hat k` already
    leaves the estimate's error out of reach.

    References:

    [1] Pareto Smoothed Importance Sampling, Aki Vehtari, Daniel Simpson, Andrew Gelman,
        Yuling Yao, Jonah Gabry, arXiv:1507.02646 (v8, section 3.2.4)
    """
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7) if num_samples > 10 else 0.0


def pareto_khat(log_w: torch.Tensor) -> torch.Tensor:
    r"""PSIS :math:`\hat k` of each column of importance log-weights ``(samples, points)`` [1].

    A generalized Pareto distribution is fitted (:func:`generalized_pareto_khat`, Pyro's
    ``fit_generalized_pareto`` batched over points) to the largest :math:`M = \min(S/5, 3\sqrt S)`
    weights of each point; above :func:`khat_threshold` the importance estimate is unreliable.
    Constant weights (a perfect proposal) get 0; weights spread so widely that the tail has no fit
    (all but the largest underflow) get :math:`+\infty`, as Pyro's fit gives; NaN only where there
    are too few samples for a tail (fewer than 25). Pyro's ``psis_diagnostic`` returns one value
    for a whole model; this gives one per data point.

    References:

    [1] Pareto Smoothed Importance Sampling, Aki Vehtari, Daniel Simpson, Andrew Gelman,
        Yuling Yao, Jonah Gabry, arXiv:1507.02646
    """
    num_samples = log_w.shape[0]
    tail = int(min(0.2 * num_samples, 3 * math.sqrt(num_samples)))
    if num_samples < TAIL_SAMPLES:
        return torch.full(log_w.shape[1:], float("nan"))
    top = log_w.double().topk(tail + 1, dim=0).values  # descending
    scaled = (top - top[:1]).exp()
    exceedances = scaled[:-1] - scaled[-1:]
    flat = (top[0] - top[-1]) < 1e-4  # constant weights up to rounding, as from the exact posterior: no tail
    khat = generalized_pareto_khat(exceedances)
    return torch.where(flat, 0.0, torch.where(khat.isnan(), math.inf, khat))


def generalized_pareto_khat(exceedances: torch.Tensor) -> torch.Tensor:
    r"""The shape :math:`\hat k` of a generalized Pareto fit to each column of ``exceedances`` ``(n, points)``.

    Zhang and Stephens' estimator with Vehtari et al.'s prior adjustment, as Pyro's
    ``fit_generalized_pareto`` computes it for one sample; batched over columns here, since
    Pyro's takes one 1-D sample and a Python loop over points costs more than the evaluation
    itself. NaN where a column has no fit (ties at zero).
    """
    x = exceedances.double().sort(0).values
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    grid = 1.0 - math.sqrt(m) / (torch.arange(1, m + 1, dtype=torch.float64, device=x.device) - 0.5).sqrt()
    b = grid[:, None] / (3.0 * x[int(n / 4 - 0.5)]) + 1 / x[-1]  # candidate k / sigma: (m, points)
    k = torch.log1p(-b[:, None, :] * x).mean(1)
    log_lik = n * (torch.log(-b / k) - (k + 1.0))
    weights = 1.0 / (log_lik[None, :, :] - log_lik[:, None, :]).exp().sum(1)
    weights = torch.where(weights > 1e-30, weights, 0.0)
    b_hat = (b * weights).sum(0) / weights.sum(0)
    k_hat = torch.log1p(-b_hat * x).mean(0)
    k_hat = k_hat * n / (n + 10.0) + 5.0 / (n + 10.0)
    return torch.where(k_hat.isfinite(), k_hat, float("nan"))
