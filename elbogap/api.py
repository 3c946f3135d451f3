"""The notebook face of elbogap: the library calls behind ``elbogap compare`` and ``evaluate``, on Python objects.

In the style of ``pyro.infer`` and ArviZ: hand over a model and guides as Python objects (Pyro
programs, classes with ``.model``/``.guide``, or built-in names), data as a tensor, an array or a
data set name, and settings as keyword arguments (the CLI's flags, with underscores)::

    import elbogap

    result = elbogap.compare(VAE, {"mine": VAE, "diag": "diag", "iaf": "iaf"}, x, latent_dim=2, steps=2000)
    result.table()          # one row per guide, best ELBO first
    result                  # in a notebook: the report as Markdown

    evaluation = elbogap.evaluate(vae.model, vae.guide, x_test)   # a trained pair, no training
    evaluation.metrics["kl_gap"], evaluation.per_point["elbo"]

Both run the same code as the command line: a study written by :func:`compare` can be read
back, plotted and resumed with the CLI (objects other than files are named ``object:NAME``
and can be reloaded only in the process that registered them).
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from elbogap import streams
from elbogap.calibration.report import markdown as calibration_markdown
from elbogap.calibration.report import write_calibration
from elbogap.calibration.study import calibrate as run_calibration
from elbogap.config import Config, coerce
from elbogap.errors import UsageError
from elbogap.factory import guide_label
from elbogap.global_latents.model import has_global_latents
from elbogap.guides import Guide, ProgramGuide
from elbogap.inference import evaluate as evaluate_pair
from elbogap.model import LatentModel
from elbogap.points import point_rows
from elbogap.records import point_splits
from elbogap.report import SUMMARY_KEYS, evaluated_splits, finished, markdown, write_results
from elbogap.runs import load_run
from elbogap.summary import rows, snr_rows
from elbogap.sweep import compare as run_sweep
from elbogap.sweep import save_study
from elbogap.user_model import ProgramModel, register_object, resolve_program


def _name_of(obj) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def _spec(obj, name: str | None = None) -> str:
    """A built-in name or ``file.py:name`` stays as it is; a Python object is registered under its name."""
    if isinstance(obj, str):
        return obj
    return register_object(name or _name_of(obj).replace(".", "_"), obj)


def _data_spec(data, out: Path) -> str:
    """A data set name or path stays; an array, a tensor or a ``(train, test)`` pair is saved into ``out``."""
    if isinstance(data, (str, Path)):
        return str(data)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(data, tuple) and len(data) == 2:
        path = out / "data.npz"
        np.savez(path, train=np.asarray(data[0]), test=np.asarray(data[1]))
    else:
        path = out / "data.npy"
        np.save(path, data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data))
    return str(path)


def _study_config(model, guides, data, out, seeds, settings: dict) -> tuple[Path, Config]:
    """The output directory (a new temporary one where None) and the validated configuration of a study of
    ``model`` with ``guides`` on ``data``; Python objects are registered, arrays saved into ``out``."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="elbogap-"))
    specs: dict[int, str] = {}  # one spec per object: a class given as model and guide is one instance per run

    def spec_of(obj, name=None):
        if isinstance(obj, str):
            return obj
        return specs.setdefault(id(obj), _spec(obj, name))

    named = guides.items() if isinstance(guides, dict) else ((None, guide) for guide in guides)
    guide_specs = [spec_of(guide, name) for name, guide in named]
    model_spec = spec_of(model)
    unknown = sorted(set(settings) - set(Config.__dataclass_fields__))
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}; use the CLI's flag names with underscores")
    config = Config(**{**settings, "model": model_spec, "guides": guide_specs, "seeds": list(seeds),
                       "data": _data_spec(data, out), "out": str(out)})
    return out, coerce(config).validate()


@dataclass
class Comparison:
    """What :func:`compare` returns: ``results`` is results.json's content, ``out`` its directory."""

    results: dict
    out: Path

    @property
    def runs(self) -> list[dict]:
        """One record per guide and seed (the ``runs`` of results.json)."""
        return self.results["runs"]

    def _view(self) -> str:
        """The split :meth:`table` reads by default: the first the records evaluate (:func:`~elbogap.report.
        evaluated_splits`), ``"test"`` for a per-point model; a model with global latents has one, ``"train"``,
        whose one unit is the whole data set."""
        return next(iter(evaluated_splits(finished(self.runs))), "test")

    def table(self, split: str | None = None) -> list[dict]:
        """One row per guide: means over seeds of the split's main numbers, the highest ELBO first.

        ``split`` is ``"test"`` or ``"train"`` for a per-point model (default ``"test"``). A row
        can be subtracted within itself: ``log_px``, ``elbo_log_px_points`` (the ELBO on the
        same points) and ``kl_gap`` cover ``log_px_points`` points; ``elbo``, ``log_px_iwae``,
        ``recon`` and ``kl_prior`` cover all ``num_points`` evaluated points; the gap split
        (``gap_log_px``, ``gap_elbo``, ``elbo_star``, ``gap_kl``, ``approx_gap``, ``amort_gap``)
        covers ``gap_points``, with ``approx_gap_bound`` where known and ``approx_gap_note`` where
        the approximation gap lies below -2 standard errors. Beside each number ``KEY``:
        ``KEY_mc_stderr``, the Monte-Carlo standard error of the mean over seeds, and with two
        seeds or more ``KEY_seed_sd``, the standard deviation of the per-seed values. ``log_px_stderr``,
        ``elbo_stderr`` and ``kl_gap_stderr`` are the mean of the seeds' own errors (one seed's precision), and
        ``khat_mean`` and ``ess_mean`` q's importance diagnostics.

        A model with global latents has one split, ``"train"``, with one unit, the whole data set
        (``log_px``, here log p(D), ``elbo``, ``kl_gap``, ``kl_gap_per_point`` beside them, and q's
        importance estimate ``log_px_iwae``): the same names, one schema (:mod:`elbogap.records`).
        Either kind's rows also sum ``elbo``, ``log_px`` and ``kl_gap`` over the split's units
        (``elbo_total``, ``log_px_total``, ``kl_gap_total``): log p(x) of all the evaluated points
        together, or log p(D) again. ``pandas.DataFrame(result.table())`` turns it into a data frame.

        Every row also carries the training gradient's signal-to-noise at the end of training, a
        number of the run rather than of a split, where it was measured (``snr_draws`` > 0):
        ``snr_encoder`` and ``snr_decoder`` (the median over parameter entries of |mean| / sd over
        ``snr_draws`` gradient draws on one fixed minibatch), ``snr_encoder_mean`` and
        ``snr_decoder_mean`` (the mean over entries), each with ``KEY_seed_sd``.
        """
        runs = finished(self.runs)
        table = rows(runs, split or self._view(), SUMMARY_KEYS)
        snr = {row.pop("guide"): row for row in snr_rows(runs)}
        for row in table:
            row.update({key: value for key, value in snr.get(row["guide"], {}).items() if key != "seeds"})
        return sorted(table, key=lambda row: -row["elbo"])

    def points(self, split: str = "test") -> list[dict]:
        """One row per finished run and evaluated point of ``split`` (``"test"`` or ``"train"``), read from each run's
        ``points.npz``: ``guide``, ``seed``, ``row`` (the point's row in the split) and that point's ``log_px``,
        ``elbo``, ``kl_gap``, ``log_px_iwae``, ``khat``, ... with their ``_stderr`` where they have one
        (:mod:`elbogap.points`); NaN
        where a point has no such number. ``pandas.DataFrame(result.points())`` turns it into a data frame, e.g. to
        find the points where one family's gap is largest, or to pair two families' gaps on the same points.

        A model with global latents has one unit, the whole data set: its per-row log-likelihoods are in the ArviZ
        export (:func:`elbogap.load`)."""
        if split not in ("test", "train"):
            raise UsageError(f"split {split!r} is not one of test, train")
        runs = finished(self.runs)
        if runs and not any(point_splits(run) for run in runs):  # no run holds a split of means over points
            raise UsageError("a model with global latents has no per-point numbers: its unit is the whole data "
                             "set; elbogap.load(out) gives each row's log-likelihood under q's draws")
        return point_rows(self.out, self.runs, split)

    def load(self, guide: str, seed: int | None = None):
        """The trained ``(model, guide, data)`` of one run, by the guide's name in the table or as ``compare`` took it
        (``"auto:AutoNormal"``, shown ``auto-AutoNormal``); the first seed by default."""
        names = {guide, guide_label(guide)}
        run = next((run for run in self.runs if run["guide"] in names and (seed is None or run["seed"] == seed)
                    and "failed" not in run), None)
        if run is None:
            raise UsageError(f"no finished run of guide {guide!r}" + (f" with seed {seed}" if seed is not None else "")
                             + f"; the runs are {', '.join(sorted({r['guide'] for r in self.runs}))}")
        _, data, model, trained, _ = load_run(self.out / run["run_dir"])
        return model, trained, data

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.results, indent=2))
        return path

    def _repr_markdown_(self) -> str:
        return markdown(self.results)

    def __repr__(self) -> str:
        rows = self.table()
        split = self._view()
        return (f"Comparison({len(self.runs)} runs in {self.out}; {split} KL gap by guide: "
                + ", ".join(f"{row['guide']} {row['kl_gap']:.3f}" for row in rows) + ")")


def compare(model="vae", guides=("diag", "full", "iaf", "planar"), data="digits", *, out: str | Path | None = None,
            seeds=(0,), progress: bool = False, **settings) -> Comparison:
    """Train ``model`` with every guide for every seed, evaluate both splits, and return the results.

    :param model: ``"vae"``, ``"linear"``, ``"file.py:name"``, or a Pyro model program: a function,
        a bound method, or a class whose instances have ``.model`` (built afresh for every run).
    :param guides: a list of built-in names, specs and objects, or a dict from the name to show to a
        built-in name, a spec, a guide program or a class with ``.guide`` (a class given as both
        model and guide is built once per run and shares its parameters).
    :param data: a data set name or path, an array or tensor (20% held out), or ``(train, test)``.
    :param out: the output directory (default: a new temporary directory).
    :param seeds: the seeds; every guide trains once per seed.
    :param bool progress: show how far each run is (tqdm bars, or a line per run's phase where runs
        execute in workers); nothing is printed without it.
    :param settings: any setting of the command line, e.g. ``latent_dim=2, steps=3000, log_px="ais"``.
    """
    out, config = _study_config(model, guides, data, out, seeds, settings)
    results = run_sweep(config, out, progress=progress, on_run=lambda partial: write_results(partial, out))
    save_study(results, out, config)
    return Comparison(json.loads((Path(out) / "results.json").read_text()), out)  # the file's content, summary too


def evaluate(model, guide, x, *, log_px: str = Config.log_px, elbo_samples: int = Config.eval_samples,
             iw_samples: int = Config.iw_samples, quadrature_points: int = Config.quadrature_points,
             ais_points: int = Config.ais_points, ais=None, seed: int = 0):
    """Evaluate a trained model and guide on the rows of ``x``, without training: a model with latents per row (a
    model with global latents is refused in one line naming :func:`compare`).

    ``model`` and ``guide`` are elbogap's own (:class:`~elbogap.model.LatentModel`,
    :class:`~elbogap.guides.Guide`) or any Pyro programs (functions, bound methods, objects with
    ``.model`` / ``.guide``); their parameters are used as they are. Returns an
    :class:`~elbogap.inference.evaluation.Evaluation`: ``metrics`` (means with standard errors:
    ``elbo``, ``log_px``, ``kl_gap``, ``log_px_iwae``, ... and how log p(x) was computed) and
    ``per_point`` tensors, with ``interval(key)`` for each point's 95% interval (one point's AIS or IWAE error has
    about 6 degrees of freedom: ``dof``). ``log_px="auto"`` uses AIS on ``ais_points`` of the rows where no
    closed form or quadrature applies; ``ais`` is an :class:`~elbogap.inference.ais.AISSettings`, by default the
    command line's (``Config().ais_settings()``: 500 temperatures x 16 chains, started at each point's posterior modes).
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
    if not isinstance(model, (LatentModel, ProgramModel)):
        program, owner = resolve_program(_spec(model), "model", x.shape[-1], None)
        if has_global_latents(program, x[:3]):
            raise UsageError(f"{_name_of(model)} has latents shared by all rows (global latents), and evaluate "
                             "judges per-point models: compare its guides with elbogap.compare(model, guides, data) "
                             "(log p(D) and each guide's KL gap), or evaluate a run of it with `elbogap evaluate "
                             "RUN_DIR`")
        model = ProgramModel(program, x[:3], _name_of(model), owner)
    if not isinstance(guide, Guide):
        program, owner = resolve_program(_spec(guide), "guide", x.shape[-1], model.latent_dim)
        guide = ProgramGuide(program, model, x[:3], _name_of(guide), owner)
    streams.seeded("notebook_evaluation", seed)
    ais_index = torch.randperm(len(x), generator=streams.generator("notebook_ais_points", seed))[:ais_points]
    ais_index = ais_index.sort().values
    return evaluate_pair(model, guide, x, elbo_samples=elbo_samples, iw_samples=iw_samples, log_px_method=log_px,
                         quadrature_points=quadrature_points, ais=ais or Config().ais_settings(), ais_index=ais_index)


@dataclass
class Calibration:
    """What :func:`calibrate` returns: ``results`` is results.json's content, ``out`` its directory."""

    results: dict
    out: Path

    def table(self) -> list[dict]:
        """One row per guide and latent site: the smallest SBC and VSBC p-values over the site's elements and their
        verdicts at 0.05 after Bonferroni, the share of u near 0 or 1, and the guide's 90% interval coverage."""
        return [{"guide": guide, "site": site, "elements": stats["elements"], "sbc_p_min": stats["sbc_p_min"],
                 "sbc_calibrated": stats["sbc_calibrated"], "vsbc_p_min": stats["vsbc_p_min"],
                 "vsbc_symmetric": stats["vsbc_symmetric"], "edge_share": stats["edge_share"],
                 "coverage_90": row["coverage_90"], "converged": row["converged"], "fits": row["fits"]}
                for guide, row in self.results["summary"].items() for site, stats in row["sites"].items()]

    def _repr_markdown_(self) -> str:
        return calibration_markdown(self.results)

    def __repr__(self) -> str:
        failing = sorted({f"{row['guide']}:{row['site']}" for row in self.table() if not row["sbc_calibrated"]})
        return (f"Calibration({len(self.results['simulations'])} simulations in {self.out}; SBC fails on "
                + (", ".join(failing) if failing else "no site") + ")")


def calibrate(model, guides=("auto:AutoNormal", "auto:AutoMultivariateNormal"), data=None, *,
              out: str | Path | None = None, simulations: int = 100, seed: int = 0, progress: bool = False,
              **settings) -> Calibration:
    """Fit every guide to ``simulations`` data sets simulated from ``model``'s prior predictive (shaped like
    ``data``) and test where each true latent falls among q's draws (SBC and VSBC per latent site; see
    :mod:`elbogap.calibration`). Arguments as :func:`compare`'s; ``model`` has global latents."""
    if data is None:
        raise UsageError("elbogap.calibrate needs data: the data set the simulations are shaped like (its covariates "
                         "are kept, its observations drawn anew)")
    out, config = _study_config(model, guides, data, out, [seed], {**settings, "simulations": simulations})
    results = run_calibration(config, progress=progress,
                              on_simulation=lambda partial: write_calibration(partial, out, figures=False))
    write_calibration(results, out, figures=config.figures, final=True)
    return Calibration(results, out)
