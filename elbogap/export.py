r"""A study's posteriors as ArviZ ``InferenceData``, saved as NetCDF beside its results (the ``arviz`` extra).

For a model with global latents, every finished run gives ``arviz/GUIDE-seedS.nc``: q's draws of each latent site
(the run's saved ``draws.pt``, one chain, shaped as the model's sites) in the ``posterior`` group, with the run's
numbers as that group's attributes (``elbo``, ``log_px``, ``kl_gap`` and their standard errors, ``khat_mean``,
``converged``, ...), and in ``log_likelihood`` each observed site's :math:`\log p(x_n \mid \theta_s)` per row at
q's first draws (up to 1000), so that ``az.loo`` and ``az.compare`` read q's draws as a posterior's (their Pareto
k-hat then says where q is too far from the leave-one-out posteriors; with latents per row the numbers are
conditional on each row's own latent too, as the group's ``given`` attribute says). Every seed gives
``arviz/reference-seedS.nc``, the reference posterior those runs were judged against: NUTS's chains as chains, or
the AIS reference's weighted states resampled to unweighted draws (systematic resampling; ArviZ's summaries take no
weights), with the number of effective draws as an attribute.
``az.summary``, ``az.plot_forest`` and the like read them; :func:`load` (``elbogap.load``) returns them all.

A VAE-shaped model's posterior is one per data point and its runs save no draws; it is not exported.

A calibration study (``elbogap calibrate``) gives ``arviz/calibration-GUIDE.nc`` per guide: the true latents of the
simulations in the ``prior`` group (one chain, a draw per simulation: they are draws from the prior), and in
``sample_stats`` per simulation the share u of q's draws below each true latent (``u_SITE``, shaped as the site),
the fit's ELBO, whether it converged and, with ``--calibration-gaps``, its KL gap; the summary's tests as
attributes. ``az.plot_ecdf(u, cdf=scipy.stats.uniform.cdf, difference=True, confidence_bands=True)`` draws the
SBC ECDF of a site from it.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch

from elbogap.checkpoint import load_checkpoint
from elbogap.errors import UsageError
from elbogap.global_latents.reference import weighted_source
from elbogap.inference import smc
from elbogap.records import upgraded

#: where a study's NetCDF files go, under its output directory
FOLDER = "arviz"
#: a run's numbers copied into the attributes of its posterior group (from its ``train`` metrics: D as one unit)
NUMBERS = ("elbo", "elbo_stderr", "log_px", "log_px_stderr", "log_px_method", "kl_gap", "kl_gap_stderr",
           "log_px_iwae", "log_px_iwae_stderr", "khat_mean", "ess_mean", "recon", "kl_prior", "units", "num_points")


def arviz():
    """ArviZ, or a one-line refusal naming the extra that installs it."""
    try:
        import arviz as az
    except ImportError:
        raise UsageError("the ArviZ export needs arviz: pip install 'elbogap[arviz]' (or pip install arviz)") from None
    return az


def site_arrays(values: dict[str, torch.Tensor], shapes: dict[str, list[int]], chains: int = 1) -> dict:
    """Draws ``(count, size)`` per site as arrays ``(chains, count / chains, *site shape)``."""
    arrays = {}
    for name, flat in values.items():
        shape = tuple(shapes.get(name, [flat.shape[-1]]))
        arrays[name] = flat.detach().cpu().double().numpy().reshape(chains, -1, *shape)
    return arrays


def systematic_resample(weights: torch.Tensor, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` draws with these normalized weights (:func:`~elbogap.inference.smc.systematic_resample`,
    its one uniform from a generator seeded ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return smc.systematic_resample(weights.detach().double().cpu().log(), count).numpy()


def run_inference_data(saved: dict, run: dict):
    """One run's q draws (``saved``, its ``draws.pt``) and numbers as ``InferenceData`` (see the module)."""
    az = arviz()
    shapes = run["model"]["sites"]["latent"]
    attrs = {key: _attribute(run["train"][key]) for key in NUMBERS if key in run["train"]}
    attrs.update(guide=run["guide"], seed=run["seed"], converged=_flag(run.get("converged")), steps=run.get("steps", 0),
                 draws_from="q, the run's guide")
    pointwise = {name: value.double().numpy()[None] for name, value in saved.get("log_likelihood", {}).items()}
    data = az.from_dict(posterior=site_arrays(saved["q"], shapes), log_likelihood=pointwise or None,
                        dims={name: ["row"] for name in pointwise})
    data.posterior.attrs.update(attrs)
    if pointwise:
        data.log_likelihood.attrs["given"] = likelihood_given(run)
    return data


def likelihood_given(run: dict) -> str:
    r"""What the ``log_likelihood`` group's :math:`\log p(x_n \mid \cdot)` is conditioned on. With latents per row
    (``z_n``) it is :math:`p(x_n \mid \theta, z_n)`: PSIS-LOO on it leaves out the row but keeps the row's own latent,
    a conditional leave-one-out that reads far above :math:`\log p(x_n \mid x_{-n})` (a tester's model with a
    latent per row: 9 nats above the exact sum), with Pareto k-hats to match."""
    local = (run.get("sites") or {}).get("local") or []
    if not local:
        return "the global latents: az.loo estimates the leave-one-out predictive log p(x_n | x_-n)"
    return (f"the global latents and each row's own latents ({', '.join(local)}): conditional on the row's latent, "
            "az.loo reads above the leave-one-out predictive log p(x_n | x_-n), which integrates that latent out")


def reference_inference_data(saved: dict, run: dict):
    """The reference posterior a run was judged against (in ``saved``, its ``draws.pt``) as ``InferenceData``, or
    None where it has none."""
    az = arviz()
    if "reference" not in saved:
        return None
    reference = run.get("reference") or {}
    method = reference.get("method", "unknown")
    values, chains = saved["reference"], 1
    attrs = {"method": method, "seed": run["seed"], "reliable": _flag(reference.get("reliable"))}
    weights = saved.get("reference_weights")
    if weights is not None:
        count = len(weights)
        index = torch.as_tensor(systematic_resample(weights, count, run["seed"]))
        values = {name: value[index] for name, value in values.items()}
        attrs.update(resampled=f"systematic, from {weighted_source(reference)}", effective_draws=_attribute(
            reference.get("effective_draws", float(weights.sum() ** 2 / (weights ** 2).sum()))))
    else:
        count = len(next(iter(values.values())))
        chains = int(reference.get("chains", 1) or 1)
        chains = chains if count % chains == 0 else 1
    data = az.from_dict(posterior=site_arrays(values, run["model"]["sites"]["latent"], chains))
    data.posterior.attrs.update(attrs)
    return data


def _flag(value) -> int:
    """A yes/no as a NetCDF attribute (which holds no booleans): 1, 0, or -1 where unknown."""
    return -1 if value is None else int(bool(value))


def _attribute(value):
    """A NetCDF attribute: numbers as floats (NaN kept), anything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(float(value)) else float("nan")
    return str(value)


def calibration_inference_data(results: dict, guide: str):
    """One guide's calibration over the simulations of ``results`` (a calibration study's) as ``InferenceData``."""
    az = arviz()
    simulations = results["simulations"]
    fits = [simulation["fits"][guide] for simulation in simulations]
    truths = [fit.get("truth") or simulation["truth"] for fit, simulation in zip(fits, simulations, strict=True)]
    shapes = results.get("sites") or {site: [len(value)] for site, value in truths[0].items()}

    def stacked(values) -> np.ndarray:  # (1 chain, a draw per simulation, *shape)
        return np.asarray(values, dtype=float)[None]

    prior = {site: stacked([truth[site] for truth in truths]).reshape(1, len(truths), *shape)
             for site, shape in shapes.items()}
    stats = {f"u_{site}": stacked([fit["shares"][site] for fit in fits]).reshape(1, len(fits), *shape)
             for site, shape in shapes.items()}
    stats["converged"] = stacked([_flag(fit.get("converged")) for fit in fits])
    for key in ("elbo", "elbo_stderr", "kl_gap", "kl_gap_stderr", "kl_gap_upper", "steps"):
        if all(fit.get(key) is not None for fit in fits):
            stats[key] = stacked([fit[key] for fit in fits])
    data = az.from_dict(prior=prior, sample_stats=stats)
    summary = results.get("summary", {}).get(guide, {})
    attrs = {"guide": guide, "seed": results.get("seed", 0), "simulations": len(simulations),
             "coverage_90": _attribute(summary.get("coverage_90")),
             "coverage_90_stderr": _attribute(summary.get("coverage_90_stderr"))}
    for site, row in summary.get("sites", {}).items():
        attrs.update({f"{site}_sbc_p_min": _attribute(row.get("sbc_p_min")),
                      f"{site}_vsbc_p_min": _attribute(row.get("vsbc_p_min"))})
    data.sample_stats.attrs.update(attrs)
    return data


def export_calibration(out: Path, results: dict) -> list[Path]:
    """Write ``out/arviz/calibration-GUIDE.nc`` for every guide of a calibration study; the paths."""
    folder = Path(out) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for guide in results["guides"] if len(results.get("simulations", [])) else ():
        path = folder / f"calibration-{guide}.nc"
        calibration_inference_data(results, guide).to_netcdf(str(path))
        written.append(path)
    return written


def export_study(out: Path) -> list[Path]:
    """Write ``out/arviz/*.nc`` for every finished run with saved draws, and one reference per seed (a calibration
    study: one file per guide, :func:`export_calibration`); the paths."""
    out = Path(out)
    results = upgraded(json.loads((out / "results.json").read_text()))
    if results.get("kind") == "calibration":
        return export_calibration(out, results)
    folder = out / FOLDER
    written, seeds = [], set()
    for run in results.get("runs", []):
        run_dir = out / run.get("run_dir", "")
        if "failed" in run or not (run_dir / "draws.pt").is_file():  # a run whose draws were saved
            continue
        folder.mkdir(exist_ok=True)
        path = folder / f"{Path(run['run_dir']).name}.nc"
        saved = load_checkpoint(run_dir / "draws.pt")
        run_inference_data(saved, run).to_netcdf(str(path))
        written.append(path)
        if run["seed"] not in seeds:
            reference = reference_inference_data(saved, run)
            if reference is not None:
                seeds.add(run["seed"])
                path = folder / f"reference-seed{run['seed']}.nc"
                reference.to_netcdf(str(path))
                written.append(path)
    return written


def load(out: str | Path) -> dict:
    """A study's exported posteriors, ``{"GUIDE-seedS": InferenceData, ..., "reference-seedS": ...}``, exported
    first where the study has none yet (``out`` is a directory ``elbogap compare`` wrote); for a calibration study
    ``{"calibration-GUIDE": InferenceData}``."""
    az = arviz()
    out = Path(out)
    if not (out / "results.json").is_file():
        raise UsageError(f"{out} holds no results.json; give a directory written by elbogap compare")
    paths = sorted((out / FOLDER).glob("*.nc")) or export_study(out)
    if not paths:
        raise UsageError(f"{out} has no run to export: the export holds the posteriors of models with global latents "
                         "from elbogap compare (a per-point model's posterior is one per data point: its numbers per "
                         "point are each run's points.npz, Comparison.points()) and the ranks of elbogap calibrate")
    return {path.stem: az.from_netcdf(str(path)) for path in sorted(paths)}
