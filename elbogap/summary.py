r"""What one row of a report holds: a split's numbers on the same points, means over seeds with both
kinds of ±, and the remark an approximation gap below zero needs.

A row must let a reader subtract: log p(x), the ELBO beside it and the KL gap are on the same
points (``log_px_points``: every evaluated point, or AIS's subset under ``--log-px auto``), and
numbers over every evaluated point (``num_points``) are columns of their own. The results.md
tables, results.json's ``summary``, the per-run lines, ``elbogap evaluate`` and the API's
``table()`` are all built from here.

Two kinds of ± exist. Within a run, the Monte-Carlo standard error of a split mean
(``KEY_stderr``). Over seeds, the standard deviation of the per-seed values (``KEY_seed_sd``):
it holds the Monte-Carlo noise and what changes with the seed (initialization, minibatches,
the evaluation subset). Beside it, ``KEY_mc_stderr`` is the Monte-Carlo standard error of the
mean over :math:`n` seeds, :math:`\sqrt{\sum_i s_i^2} / n`.
"""

import math
import re
import statistics
from collections.abc import Callable, Iterable

from elbogap.records import cannot_tell

#: log p(x), the ELBO on the points it covers and the KL gap: log_px - elbo_log_px_points = kl_gap
SAME_POINTS = ("log_px", "elbo_log_px_points", "kl_gap")
#: the numbers over every evaluated point of a split (``num_points``)
ALL_POINTS = ("elbo", "log_px_iwae", "recon", "kl_prior")
#: the approximation/amortization split on the gap points (``gap_points``):
#: gap_log_px - gap_elbo = gap_kl = approx_gap + amort_gap, gap_log_px - elbo_star = approx_gap
GAP_SPLIT = ("gap_log_px", "gap_elbo", "elbo_star", "gap_kl", "approx_gap", "amort_gap")

#: the training gradient's signal-to-noise at the end of training, per run (not per split): the median over
#: parameter entries of |mean| / sd over ``snr_draws`` gradient draws, and the mean, for the guide's and the model's
SNR_KEYS = ("snr_encoder", "snr_encoder_mean", "snr_decoder", "snr_decoder_mean")

#: an approximation gap closer to 0 than this is floating-point rounding, not noise to raise draws against: float32
#: sums of ELBO terms of a few hundred nats round at about 1e-5 (q* at an exact posterior read -1.2e-7 ± 8e-8)
ROUNDING_NATS = 1e-4

#: why a log p(x) method can put an approximation gap below zero, and what to raise
BELOW_ZERO_CAUSES = {
    "ais": "AIS below log p(x) or noise: raise --ais-steps",
    "iwae": "IWAE below log p(x) (a lower bound) or noise: raise --iw-samples",
    "quadrature": "quadrature error or noise in the ELBO: raise --quadrature-points or --eval-samples",
    "exact": "noise in the ELBO of q*: raise --eval-samples",
}


def on_log_px_points(metrics: dict) -> dict:
    """A split's metrics with ``elbo_log_px_points`` (and its standard error) wherever they can be had.

    Where log p(x) covers every evaluated point, the ELBO on its points is ``elbo`` itself.
    """
    metrics = dict(metrics)
    if "log_px" in metrics and metrics.get("log_px_points", metrics.get("num_points")) == metrics.get("num_points"):
        metrics.setdefault("elbo_log_px_points", metrics["elbo"])
        metrics.setdefault("elbo_log_px_points_stderr", metrics.get("elbo_stderr"))
    return metrics


def seed_sd(values: list[float]) -> float:
    """The sample standard deviation of ``values`` (two or more); NaN where one is not finite, as an evidence without
    an error bar has (``statistics.stdev`` raises on NaN)."""
    return statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan


def over_seeds(splits: list[dict], key: str) -> dict | None:
    """``mean`` of ``key`` over the runs' metrics, ``seed_sd`` (two seeds or more) and ``mc_stderr``.

    ``mc_stderr`` is the Monte-Carlo standard error of the mean, where every run has ``KEY_stderr``.
    None where a run lacks ``key``.
    """
    values = [metrics.get(key) for metrics in splits]
    if not values or any(value is None for value in values):
        return None
    stats = {"mean": statistics.fmean(values)}
    if len(values) > 1:
        stats["seed_sd"] = seed_sd(values)
    stderrs = [metrics.get(f"{key}_stderr") for metrics in splits]
    if all(isinstance(stderr, (int, float)) and math.isfinite(stderr) for stderr in stderrs):
        stats["mc_stderr"] = math.sqrt(sum(stderr**2 for stderr in stderrs)) / len(stderrs)
    return stats


def seed_columns(records: list[dict], keys: Iterable[str]) -> dict:
    """For each of ``keys`` the mean over ``records`` (see :func:`over_seeds`), with ``KEY_seed_sd`` and
    ``KEY_mc_stderr`` where they exist; nothing for a key some record lacks."""
    columns = {}
    for key in keys:
        stats = over_seeds(records, key)
        if stats is not None:
            columns[key] = stats["mean"]
            columns.update({f"{key}_{kind}": value for kind, value in stats.items() if kind != "mean"})
    return columns


def figure(value: float, beside: float | None = None) -> str:
    """Three decimals, or two significant digits where three decimals would show a number that is not 0 as 0.000
    (a precise evidence's error, a small gap per point), which reads as exact. A value shown ``beside`` its error
    gets as many decimals as that error shows (the larger, where a cell shows two): a gap of -0.00061 ± 0.00045
    read "-0.001 ± 0.00045", 2.2 errors below 0 where it lies 1.4; beside an error of 1 or more, one decimal (none
    from 10), as that error's second digit: a mean ESS of 189.2 ± 3.5, not 189.178 ± 3.499."""
    if beside is not None and math.isfinite(beside) and abs(beside) >= 1:
        return f"{value:.{1 if abs(beside) < 10 else 0}f}"
    if beside is not None and math.isfinite(beside) and beside != 0 and abs(beside) < 0.0005:
        return f"{value:.{max(3, 1 - math.floor(math.log10(abs(beside))))}f}"
    return f"{value:.2g}" if value != 0 and abs(value) < 0.0005 else f"{value:.3f}"


def error_figure(error: float) -> str:
    """An error as :func:`figure` writes it, to its own second digit from 1 up (3.5, not 3.499)."""
    return figure(error, error if math.isfinite(error) and abs(error) >= 1 else None)


def cell(stats: dict | None, marker: str = "") -> str:
    """``mean ± s.e.`` for one seed; ``mean ± sd over seeds (s.e. of the mean)`` for several; ``–`` for none; each
    number as :func:`figure` writes it."""
    if stats is None:
        return "–"
    errors = [stats[key] for key in ("seed_sd", "mc_stderr") if key in stats and math.isfinite(stats[key])]
    text = f"{marker}{figure(stats['mean'], max(errors, default=None))}"
    if "seed_sd" in stats:
        text += f" ± {error_figure(stats['seed_sd'])}"
        if "mc_stderr" in stats:
            text += f" (s.e. {error_figure(stats['mc_stderr'])})"
    elif "mc_stderr" in stats:
        text += f" ± {error_figure(stats['mc_stderr'])}"
    return text


def plus_minus(seed_counts: Iterable[int]) -> str:
    """What the ± of a table means, for a table whose rows have these numbers of seeds."""
    counts = set(seed_counts)
    one = ("with one seed, ± is the Monte-Carlo standard error of the split mean within the run (none where a cell "
           "has no ±)")
    several = ("with several seeds, ± is the standard deviation of the per-seed values and (s.e.) the "
               "Monte-Carlo standard error of their mean, √(Σ s²)/n (none where a cell has no s.e.)")
    text = "; ".join(([one] if 1 in counts else []) + ([several] if counts - {1} else [])) + "."
    return text[0].upper() + text[1:]


def approx_gap_note(metrics: dict) -> str | None:
    """The remark an approximation gap needs where it lies below −2 standard errors, else None.

    An approximation gap log p(x) − ELBO(q*) is a KL divergence, never negative; below −2
    standard errors, log p(x) is underestimated (AIS too short, IWAE's bound) or the ELBO
    of q* is noisy. ``metrics`` holds ``approx_gap``, ``approx_gap_stderr`` and the method that
    gave log p(x) on the gap points (``gap_log_px_method``, else ``log_px_method``).
    """
    gap, stderr = metrics.get("approx_gap"), metrics.get("approx_gap_stderr")
    if gap is None or stderr is None or not math.isfinite(stderr) or gap >= -max(2 * stderr, ROUNDING_NATS):
        return None
    method = metrics.get("gap_log_px_method", metrics.get("log_px_method"))
    cause = BELOW_ZERO_CAUSES.get(method, "noise in the ELBO: raise --eval-samples")
    return f"approximation gap {figure(gap, stderr)} ± {error_figure(stderr)}, below −2 standard errors: {cause}"


def bound_markers(splits: list[dict]) -> dict[str, str]:
    """``≤`` on the approximation gap and ``≥`` on the amortization gap where a run's is a bound, not exact.

    For flows q* is searched through the encoder's features (``approx_gap_bound == "upper"``).
    """
    if any(metrics.get("approx_gap_bound") == "upper" for metrics in splits):
        return {"approx_gap": "≤ ", "amort_gap": "≥ "}
    return {}


def converged_cell(runs: list[dict]) -> str:
    """``yes``, ``no`` or ``1 of 2``: how many of a guide's runs converged by their rule; ``unclear`` where none was
    called unconverged and the rule could not tell for some (its gain's interval holds the tolerance); ``–`` where
    none was judged (results written before the rule, or too few steps)."""
    verdicts = [run.get("converged") for run in runs]
    unclear = any(cannot_tell(run) for run in runs)
    if all(verdict is None for verdict in verdicts):
        return "unclear" if unclear else "–"
    done = sum(1 for verdict in verdicts if verdict)
    if done == 0:
        return "no" if False in verdicts else "unclear"
    return "yes" if done == len(verdicts) else f"{done} of {len(verdicts)}"


#: what to do about a fit that did not converge, by the rule that judged it
CONVERGENCE_ADVICE = {
    "trend": "train longer (--steps or --epochs), or let elbogap train until it converges (--schedule converge)",
    "plateau": "raise the cap (--steps) or start from a larger learning rate (--lr)",
}


#: what to do about a per-point model's fit the trend rule saw still rising on fixed draws: not --schedule converge,
#: which trained the default VAE's diag (seed 1) to its cap of 20,000 steps without settling, its encoder overfitting
#: the training rows (test KL gap 2.03 against 0.165 after the default 2,000 steps)
FIXED_DRAWS_ADVICE = "train longer (--steps or --epochs), or read the numbers as those of a fit still improving"


def convergence_advice(record: dict) -> str:
    """What to do about an unconverged fit, by its rule and by how it ended: a plateau fit whose rate was cut back
    after its ELBO diverged or fell needs a smaller first rate, not a larger one; a per-point model's fit read on fixed
    draws, more steps, not training until its ELBO settles."""
    if record.get("rule") == "plateau" and record.get("backoffs"):
        return (f"its learning rate was cut back {record['backoffs']} time(s) after the ELBO diverged or fell: start "
                "from a smaller --lr (a tenth of this one) or use more --particles")
    if record.get("read_from") == "fixed_draws":  # a per-point model: training until the ELBO settles overfits
        return FIXED_DRAWS_ADVICE
    return CONVERGENCE_ADVICE.get(record.get("rule"), "train longer")


def convergence_warnings(runs: list[dict]) -> list[str]:
    """A Warnings line for every run whose fit did not converge (one per guide where the trend rule judged its seeds
    alike): which, why, and what to do."""
    lines = []
    still_rising = {}  # guide -> its runs the trend rule saw still rising, said in one line
    for run in runs:
        record = run.get("convergence") or {}
        if run.get("converged") is False and record.get("rule") == "trend" and "gain" in record:
            still_rising.setdefault(run["guide"], []).append(run)
        elif run.get("converged") is False:
            lines.append(f"- {run['guide']} seed {run['seed']} did not converge ({record.get('rule')} rule): "
                         f"{record.get('reason', '')}; its ELBO and KL gap describe an unfinished fit, not the "
                         f"family: {convergence_advice(record)}")
    lines += [rising_line(guide, group) for guide, group in still_rising.items()]
    lines += per_guide_lines([(run["guide"], run["seed"], unjudged_message(run)) for run in runs
                              if run.get("converged") is None and (run.get("convergence") or {}).get("reason")])
    for run in runs:
        for split in ("test", "train"):
            metrics = run.get(split, {})
            if metrics.get("q_star_converged") is False:
                lines.append(f"- {run['guide']} seed {run['seed']}, {split}: the refit of q* stopped at its cap before "
                             "its ELBO stopped rising: the approximation gap is overstated and the amortization gap "
                             "understated by what it had left")
            if metrics.get("local_fit_converged") is False:
                lines.append(f"- {run['guide']} seed {run['seed']}, {split}: the per-point fit of the {split} points "
                             "stopped at its cap before its ELBO stopped rising")
    return lines


def unjudged_message(run: dict) -> str:
    """Why a run's fit has no verdict (too few steps for the trend rule, none at --steps 0, or a gain the rule cannot
    tell from the tolerance), and what that means."""
    record = run["convergence"]
    if cannot_tell(run):
        return (f"{record['reason']}; its ELBO and KL gap may describe a fit still improving: "
                f"{convergence_advice(record)}")
    what = ", and nothing was trained: its numbers are the initial q's" if run.get("steps") == 0 else \
        ": its ELBO and KL gap may describe an unfinished fit"
    return f"its fit was not judged ({record['reason']}){what}; train longer (--steps, at least 50)"


#: a test split's KL gap above this many times the training split's, and above it by more than HELD_OUT_NATS and
#: HELD_OUT_STDERRS of their joint standard errors, is said (:func:`held_out_warnings`); at four, a tester's low-rank
#: q read 49.5 ± 15.1 on the test split against 0.345 on the training split (one held-out row's ELBO -1,963) unsaid
HELD_OUT_RATIO = 2.0
HELD_OUT_NATS = 0.1
HELD_OUT_STDERRS = 3.0


def held_out_warnings(runs: list[dict]) -> list[str]:
    """A Warnings line where a guide's KL gap on the test split is far above its gap on the training split: q serves
    the rows it was trained on, not the held-out ones (a tester's Poisson program read 1.585 against 0.024, almost
    all of it amortization, and nothing said so)."""
    messages = []
    for run in runs:
        test, train = run.get("test") or {}, run.get("train") or {}
        gap, base = test.get("kl_gap"), train.get("kl_gap")
        if gap is None or base is None or not (math.isfinite(gap) and math.isfinite(base)):
            continue
        noise = math.hypot(test.get("kl_gap_stderr") or 0.0, train.get("kl_gap_stderr") or 0.0)
        if gap <= HELD_OUT_RATIO * max(base, 0.0) or gap - base <= max(HELD_OUT_NATS, HELD_OUT_STDERRS * noise):
            continue
        amortization = ""
        if test.get("amort_gap") is not None and test.get("approx_gap") is not None:
            shown = test["approx_gap"] + test["amort_gap"]
            amortization = (f"; on the test split's {test['gap_points']} gap points {test['amort_gap']:.3f} nats of "
                            f"{shown:.3f} are the amortization gap")
            if shown < (gap - base) / 2:  # the excess lies on rows the gap points left out
                amortization += (", far below the split's gap: most of it lies on rows outside them (raise "
                                 "--gap-points to split it there)")
        messages.append((run["guide"], run["seed"], f"its KL gap on the test split, {gap:.3f}, is more than twice "
                         f"its gap on the training split, {base:.3f}{amortization}: q fits the rows it was trained "
                         "on far better than the held-out ones (held-out rows unlike the training rows, or an "
                         "encoder that overfits); compare families on each split, and read the amortization gap"))
    return per_guide_lines(messages)


#: a number inside a Warnings message (:func:`per_guide_lines` reads where two messages differ only there)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def per_guide_lines(messages: list[tuple[str, int, str]]) -> list[str]:
    """Warnings lines from ``(guide, seed, message)``: where seeds give the same message but for its numbers, one
    line names them and gives each number's range (``0.682-0.688``, :func:`span`); where several guides do so on the
    same seeds, one line names the guides too."""
    groups: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for guide, seed, message in messages:
        groups.setdefault(NUMBER.sub("#", message), {}).setdefault(guide, []).append((seed, message))
    lines = []
    for by_guide in groups.values():
        bundles: dict[tuple, tuple[list[str], list]] = {}  # the guides that gave the message on the same seeds
        for guide, rows in by_guide.items():
            bundle = bundles.setdefault(tuple(sorted(seed for seed, _ in rows)), ([], []))
            bundle[0].append(guide)
            bundle[1].extend(rows)
        for guides, rows in bundles.values():
            seeds = sorted(dict.fromkeys(seed for seed, _ in rows))
            columns = zip(*(NUMBER.findall(message) for _, message in rows), strict=True)
            spans = [number[0] if len(set(number)) == 1 else span(min(number, key=float), max(number, key=float))
                     for number in columns]
            words = NUMBER.split(rows[0][1])
            text = "".join(word + part for word, part in zip(words, [*spans, ""], strict=True))
            lines.append(f"- {', '.join(guides)} seed{'s' if len(seeds) > 1 else ''} "
                         f"{', '.join(map(str, seeds))}: {text}")
    return lines


def span(low: str, high: str) -> str:
    """A range of two numbers as text: ``0.682-0.688``, or ``-0.0122 to 0.0189`` where a hyphen would read as a minus
    sign."""
    return f"{low} to {high}" if low.startswith("-") or high.startswith("-") else f"{low}-{high}"


def rising_line(guide: str, runs: list[dict]) -> str:
    """One Warnings line for a guide's runs that the trend rule saw still rising: each seed's gain over the window."""
    records = [run["convergence"] for run in runs]
    where = {"fixed_draws": f", on fixed draws of {records[0].get('terms')} training rows",
             "minibatches": ", from the minibatch ELBOs"}.get(records[0].get("read_from"), "")
    gains = ", ".join(f"{record['gain']:.3g} nats (s.e. {record['gain_stderr']:.2g}) for seed {run['seed']}"
                      for run, record in zip(runs, records, strict=True))
    seeds = f"seed{'s' if len(runs) > 1 else ''} {', '.join(str(run['seed']) for run in runs)}"
    unfinished = ("its ELBO and KL gap describe an unfinished fit" if len(runs) == 1
                  else "their ELBOs and KL gaps describe unfinished fits")
    return (f"- {guide} {seeds} did not converge (trend rule): the ELBO was still rising when training stopped, over "
            f"the last {records[0]['window']} steps it gained {gains}{where}, above the tolerance "
            f"{records[0]['tolerance']:g}; {unfinished}, not the family: {convergence_advice(records[0])}")


def rows(runs: list[dict], split: str, keys: Iterable[str],
         counts: Iterable[str] = ("num_points", "log_px_points", "gap_points")) -> list[dict]:
    """One row per guide over its finished runs: for each of ``keys`` the mean over seeds, with
    ``KEY_seed_sd`` and ``KEY_mc_stderr`` where they exist; the point ``counts`` of the first seed,
    the log p(x) method, and the note on the approximation gap of the mean (see :func:`approx_gap_note`)."""
    table = []
    for guide in dict.fromkeys(run["guide"] for run in runs):
        mine = [on_log_px_points(run[split]) for run in runs if run["guide"] == guide]
        verdicts = [run.get("converged") for run in runs if run["guide"] == guide]
        # False where a seed is shown unconverged, else None where one has no verdict (or its rule cannot tell)
        converged = False if any(verdict is False for verdict in verdicts) else None if None in verdicts else True
        row = {"guide": guide, "seeds": len(mine), "converged": converged,
               "converged_seeds": sum(1 for verdict in verdicts if verdict)}
        row.update({count: mine[0][count] for count in counts if count in mine[0]})
        row.update(seed_columns(mine, keys))
        row["log_px_method"] = mine[0].get("log_px_method")
        bounds = {metrics["approx_gap_bound"] for metrics in mine if "approx_gap_bound" in metrics}
        if bounds:
            row["approx_gap_bound"] = "upper" if "upper" in bounds else bounds.pop()
        method = mine[0].get("gap_log_px_method", row["log_px_method"])
        note = approx_gap_note({"approx_gap": row.get("approx_gap"), "gap_log_px_method": method,
                                "approx_gap_stderr": row.get("approx_gap_mc_stderr")})
        if note:
            row["approx_gap_note"] = note
        table.append(row)
    return table


def snr_rows(runs: list[dict]) -> list[dict]:
    """One row per guide with its runs' gradient signal-to-noise (:data:`SNR_KEYS`): the mean over seeds and, with
    two seeds or more, ``KEY_seed_sd``; none where no run measured it (``--snr-draws 0``)."""
    table = []
    for guide in dict.fromkeys(run["guide"] for run in runs if "snr_draws" in run):
        mine = [run for run in runs if run["guide"] == guide]
        table.append({"guide": guide, "seeds": len(mine), "snr_draws": mine[0].get("snr_draws"),
                      **seed_columns(mine, SNR_KEYS)})
    return table


def split_line(metrics: dict) -> str:
    """A split's numbers in one line: log p(x), the ELBO and the KL gap on the same points, then the whole split's."""
    metrics = on_log_px_points(metrics)
    points, total = metrics.get("log_px_points", metrics["num_points"]), metrics["num_points"]
    line = (f"log p(x) {metrics['log_px']:.3f}, ELBO {metrics['elbo_log_px_points']:.3f}, "
            f"gap {metrics['kl_gap']:.3f} ± {metrics['kl_gap_stderr']:.3f} on {points} points")
    if points < total:
        line += f"; ELBO {metrics['elbo']:.3f} on all {total}"
    return line


def log_fields(metrics: dict) -> dict:
    """A split's numbers for the run's log, the same points side by side: log p(x), the ELBO there and the
    KL gap on ``log_px_points``, then ``num_points``'s ELBO and IWAE, then the gap split."""
    metrics = on_log_px_points(metrics)
    keys = ("log_px_points", *SAME_POINTS, "kl_gap_stderr", "num_points", "elbo", "log_px_iwae",
            "gap_points", "approx_gap", "approx_gap_stderr", "amort_gap", "amort_gap_stderr")
    return {key: metrics[key] for key in keys if metrics.get(key) is not None}


def stacked_sentence(runs: list[dict]) -> str:
    """The sentence that says which guides' seeds trained as one program before each was evaluated alone ("" if
    none did)."""
    stacked = sorted({run["guide"] for run in runs if run.get("stacked_seeds")})
    return (f" Each seed of {', '.join(stacked)} trained with the guide's other seeds as one program (stacked fits), "
            "then was evaluated alone." if stacked else "")


def points_cell(metrics: dict, count: str) -> str:
    """The points a row's first columns cover: ``count`` of the split's evaluated points."""
    covered = metrics.get(count, metrics["num_points"])
    return str(covered) if covered == metrics["num_points"] else f"{covered} of {metrics['num_points']}"


def table(runs: list[dict], split: str, columns: list[tuple[str, str]], count: str | None = "log_px_points",
          converged: bool = False, notes: dict[str, str] | None = None,
          extra: tuple[str, Callable[[list[dict]], str]] | None = None) -> list[str]:
    """A Markdown table of one split, one row per guide, for every kind of model: the points each row covers
    (``count``; none where None), each column as mean ± error over the guide's seeds (:func:`cell`), an ``extra``
    column ``(title, cell from the guide's split metrics)``, the seeds, and with ``converged`` whether its fits
    converged. ``notes`` follow a cell whose number some seed gave without an error bar (by key)."""
    splits = [on_log_px_points(run[split]) for run in runs]
    titles = ([] if count is None else ["points"]) + [title for _, title in columns] + (
        [extra[0]] if extra else []) + ["seeds"] + (["converged"] if converged else [])
    lines = ["| guide | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for guide in dict.fromkeys(run["guide"] for run in runs):
        mine = [metrics for run, metrics in zip(runs, splits, strict=True) if run["guide"] == guide]
        markers = bound_markers(mine)
        cells = [] if count is None else [points_cell(mine[0], count)]
        for key, _ in columns:
            declined = key in (notes or {}) and any(
                not math.isfinite(metrics.get(f"{key}_stderr", math.nan)) for metrics in mine if key in metrics)
            cells.append(cell(over_seeds(mine, key), markers.get(key, "")) + (f" ({notes[key]})" if declined else ""))
        cells += [extra[1](mine)] if extra else []
        cells.append(str(len(mine)))
        cells += [converged_cell([run for run in runs if run["guide"] == guide])] if converged else []
        lines.append(f"| {guide} | " + " | ".join(cells) + " |")
    return lines
