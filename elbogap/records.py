"""One record schema for every kind of model, and the reading of records written before it.

A run's metrics sit under its splits, ``train`` and ``test``, with the same names whatever the model: each number is
per *unit* (``units`` of them), a data point of a model whose latents are per point, or the whole data set D of a
model with global latents (one unit: ``log_px`` is then log p(D), ``elbo`` ELBO(D), ``recon``
:math:`E_q[\\log p(D \\mid \\theta, z)]`, ``log_px_iwae`` q's importance estimate; ``*_per_point`` divide by the
rows). Beside the means, ``elbo``, ``log_px`` and ``kl_gap`` are summed over the units (:func:`with_totals`), so that
either kind reads :math:`\\log p(D) = \\sum_n \\log p(x_n)` under one name. Records written before 2026-12-06 kept a
global model's numbers under ``data`` with other names; :func:`upgraded_run` renames them, so a study resumed or
redrawn from then reads as one written now.
"""

#: the metrics a split also gives summed over its units, as ``<name>_total`` with ``<name>_total_stderr``
TOTALED = ("elbo", "log_px", "kl_gap")
TOTAL_KEYS = tuple(f"{key}_total{part}" for key in TOTALED for part in ("", "_stderr"))

#: the names every kind's split metrics carry (a test holds each kind's records to them)
SHARED_METRICS = frozenset({
    "units", "num_points", "elbo", "elbo_stderr", "elbo_samples", "recon", "kl_prior", "log_px", "log_px_stderr",
    "log_px_method", "log_px_guide_independent", "log_px_iwae", "log_px_iwae_stderr", "log_px_iwae_samples", "kl_gap",
    "kl_gap_stderr", "ess_mean", "khat_mean", *TOTAL_KEYS,
})

#: the global kind's old metric names (under ``data``) and their names now (under ``train``)
RENAMED = {
    "samples": "elbo_samples",
    "expected_log_lik": "recon",
    "log_evidence": "log_px",
    "log_evidence_stderr": "log_px_stderr",
    "log_evidence_dof": "log_px_dof",
    "log_evidence_method": "log_px_method",
    "log_evidence_start": "log_px_start",
    "log_evidence_guide_independent": "log_px_guide_independent",
    "log_evidence_per_point": "log_px_per_point",
    "log_evidence_q": "log_px_iwae",
    "log_evidence_q_stderr": "log_px_iwae_stderr",
    "log_evidence_q_dof": "log_px_iwae_dof",
    "log_evidence_q_note": "log_px_iwae_note",
    "log_evidence_q_per_point": "log_px_iwae_per_point",
    "ess": "ess_mean",
    "khat": "khat_mean",
    "q_above_ais": "iwae_above_ais",
    "q_above_ais_stderr": "iwae_above_ais_stderr",
    "evidence_warning": "log_px_warning",
    "evidence_note": "log_px_note",
}


def whole_data_set(metrics: dict) -> bool:
    """Whether a split's ``metrics`` are of one unit, the whole data set D (``rows`` names what it holds; a model with
    global latents evaluates D so), rather than means over its data points."""
    return "rows" in metrics or (metrics.get("units") == 1 and metrics.get("num_points", 1) > 1)


def of_whole_data_set(run: dict) -> bool:
    """Whether ``run``'s training split is the whole data set as one unit (:func:`whole_data_set`), with its ELBO: its
    numbers are log p(D), the ELBO of D and their gap, as a model with global latents records them."""
    return "elbo" in run.get("train", {}) and whole_data_set(run["train"])


def point_splits(run: dict) -> list[str]:
    """The splits of ``run`` whose records are means over data points (``test`` first), not the whole data set."""
    return [split for split in ("test", "train") if "elbo" in run.get(split, {}) and not whole_data_set(run[split])]


def cannot_tell(run: dict) -> bool:
    """Whether a run's rule judged its fit and could not tell whether it converged (``converged`` None beside a gain:
    the gain's interval holds the tolerance), as against a fit not judged at all (too few steps, none taken)."""
    return run.get("converged") is None and "gain" in (run.get("convergence") or {})


def with_totals(metrics: dict) -> dict:
    r"""A split's ``metrics`` with each of :data:`TOTALED` summed over its ``units``: :math:`\sum_n m_n = N \bar m`,
    and its standard error :math:`N` times the mean's (which combines the units' own errors,
    :func:`~elbogap.inference.weights.mean_error`). The units are the points evaluated, a seeded subset where the split
    was evaluated on one (``num_points`` of ``split_points``); for the whole data set D, one unit, a total is its
    number. Where log p(x) covers only some of the units (``log_px_points``: AIS's subset), its total and the KL gap's
    are None: the mean over the subset times the units would be an extrapolation, not a sum (None too where the
    record has no such number)."""
    units = metrics.get("units", metrics["num_points"])
    every_unit = metrics.get("log_px_points", units) == units
    totals = {}
    for key in TOTALED:
        summed = key == "elbo" or every_unit
        for name in (key, f"{key}_stderr"):
            value = metrics.get(name)
            totals[name.replace(key, f"{key}_total", 1)] = units * value if summed and value is not None else None
    return {**metrics, **totals}


def upgraded_run(run: dict) -> dict:
    """``run`` under today's names: a global model's ``data`` metrics become its ``train`` split (one unit), and its
    curve's ``data_elbo`` points ``train_elbo``; splits written before the totals gain them (:func:`with_totals`). A
    record already in today's schema is returned as it is."""
    if "data" not in run or "train" in run:
        untotaled = [split for split in ("train", "test")
                     if "elbo" in run.get(split, {}) and "elbo_total" not in run[split]]
        return {**run, **{split: with_totals(run[split]) for split in untotaled}} if untotaled else run
    old = run["data"]
    metrics = {"units": 1, **{RENAMED.get(key, key): value for key, value in old.items()}}
    if "samples" in old:
        metrics.setdefault("log_px_iwae_samples", old["samples"])
    metrics = with_totals(metrics)
    run = {("train" if key == "data" else key): (metrics if key == "data" else value) for key, value in run.items()}
    if "curve_eval" in run:
        run["curve_eval"] = [{("train_elbo" if key == "data_elbo" else key): value for key, value in point.items()}
                             for point in run["curve_eval"]]
    return run


def upgraded(results: dict) -> dict:
    """A study's results with every run under today's names (:func:`upgraded_run`), and its summary over seeds."""
    out = {**results, "runs": [upgraded_run(run) for run in results.get("runs", [])]}
    summary = results.get("summary", {})
    if "data" in summary and "train" not in summary:
        rows = [{_renamed(key): value for key, value in row.items()} for row in summary["data"]]
        out["summary"] = {("train" if key == "data" else key): (rows if key == "data" else value)
                          for key, value in summary.items()}
    return out


def _renamed(key: str) -> str:
    """A summary column's name now: the metric's, with its ``_seed_sd`` or ``_mc_stderr`` kept."""
    for suffix in ("_seed_sd", "_mc_stderr", ""):
        stem = key.removesuffix(suffix) if suffix else key
        if (key.endswith(suffix) or not suffix) and stem in RENAMED:
            return RENAMED[stem] + suffix
    return key
