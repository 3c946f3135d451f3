"""Models with global latents at elbogap's default flags: each guide's KL gap against its true value, and the time.

    python benchmarks/defaults.py [--cases conjugate100,eight-schools,...] [--seeds 0] [--careful]
        [--guides auto:AutoIAFNormal] [--warm-start off]

For each case of ``benchmarks/global_cases.py``, ``elbogap.compare`` with the four autoguides and no setting but the
seed: the defaults a new user meets (train until converged; log p(D) by AIS from a fitted reference). Each gap is
compared with the family's true gap: the closed form where the posterior is Gaussian; elsewhere, with ``--careful``,
the gap of a careful fit of the same family (32 particles a step, from lr 0.01, a tolerance of 0.005 nats, windows of
100 steps, at most 30000 steps, its ELBO from 64000 draws) against the exact evidence (or, for the logistic
regression, the default run's). Seconds are the training's (both fits', for a family trained from two starts). A
row is right where the gap is within max(0.1, 3 s.e.) of the truth, and honest where it is right or its run says it
did not converge.
"""

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import elbogap  # noqa: E402
from benchmarks.global_cases import GUIDES, cases  # noqa: E402
from elbogap.config import Config  # noqa: E402
from elbogap.data import Dataset  # noqa: E402
from elbogap.factory import make_trainer  # noqa: E402
from elbogap.global_latents.evaluation import guide_draws  # noqa: E402
from elbogap.global_latents.guides import global_guide  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.inference import convergence  # noqa: E402
from elbogap.threads import intra_op_threads  # noqa: E402

CAREFUL = {"particles": 32, "lr": 0.01, "convergence_tol": 0.005, "steps": 30000}


def careful_elbo(case, guide_name: str, seed: int) -> tuple[float, bool, int]:
    """The ELBO of D of a careful fit of ``guide_name`` (see the module), whether it converged, and its steps."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = GlobalLatentModel(case.program, case.data, case.name)
    guide = global_guide(guide_name, model, case.data)
    config = Config(model="careful", guides=[guide_name], schedule="converge", **CAREFUL).validate()
    dataset = Dataset(case.name, case.data, case.data[:0], kind="global")
    rule = convergence.ConvergenceSettings(tolerance=CAREFUL["convergence_tol"], window=100)
    with intra_op_threads(1):
        trainer = make_trainer(config, model, guide, dataset, seed, rule=rule)
        trainer.run(CAREFUL["steps"])
        draws = guide_draws(model, guide, case.data, 64000)
    return float(draws.log_w.double().mean()), bool(trainer.convergence(CAREFUL["steps"])["converged"]), \
        trainer.step_count


def main(args) -> None:
    torch.set_num_threads(1)
    rows = []
    for case in cases(args.cases):
        for seed in args.seeds:
            out = Path(tempfile.mkdtemp(prefix="elbogap-defaults-"))
            started = time.perf_counter()
            result = elbogap.compare(case.program, args.guides, case.data, seeds=[seed], out=out,
                                     **({"warm_start": args.warm_start} if args.warm_start else {}))
            seconds = time.perf_counter() - started
            evidence = result.runs[0]["evidence"]
            exact = case.log_evidence
            for run in result.runs:
                data = run["train"]
                truth = case.best_gaps.get(run["guide_spec"])
                source = "closed form" if truth is not None else "–"
                if truth is None and args.careful:
                    elbo, settled, steps = careful_elbo(case, run["guide_spec"], seed)
                    reference = exact if exact is not None else data["log_px"]
                    truth, source = reference - elbo, f"careful fit ({steps} steps{'' if settled else ', unsettled'})"
                error = None if truth is None else data["kl_gap"] - truth
                allowed = max(0.1, 3 * data["kl_gap_stderr"])
                second = run.get("second_start")
                kept = ("–" if not second else f"{second['kept']} ({second['elbo'][0]:.3f} / {second['elbo'][1]:.3f}, "
                        f"{second['steps'][1]} steps)")
                rows.append((case.name, seed, run["guide"], data["kl_gap"], data["kl_gap_stderr"], truth, source, error,
                             error is not None and abs(error) <= allowed, run["converged"], run["steps"],
                             run["train_seconds"] + (second["seconds"] if second else 0.0), kept))
            rows.append((case.name, seed, "log p(D)", data["log_px"], data["log_px_stderr"], exact,
                         "exact" if exact is not None else "–",
                         None if exact is None else data["log_px"] - exact,
                         exact is not None and abs(data["log_px"] - exact) <= 3 * data["log_px_stderr"],
                         None, evidence["steps_used"], evidence["seconds"], "–"))
            print(f"{case.name}, seed {seed}: {seconds:.0f} s for the study", file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    print("| case | seed | guide | KL gap ± s.e. | true gap | from | error | within max(0.1, 3 s.e.) | converged "
          "| steps (AIS: temperatures) | seconds | second start kept (ELBO from Pyro's start / the fit) |")
    print("|---" * 12 + "|")
    for name, seed, guide, value, stderr, truth, source, error, right, converged, steps, seconds, kept in rows:
        shown = "–" if truth is None else f"{truth:.3f}"
        wrong = "–" if error is None else f"{error:+.3f}"
        verdict = "–" if truth is None else ("yes" if right else "**no**")
        said = "–" if converged is None else ("yes" if converged else "no (warned)")
        print(f"| {name} | {seed} | {guide} | {value:.3f} ± {stderr:.3f} | {shown} | {source} | {wrong} | {verdict} | "
              f"{said} | {steps} | {seconds:.1f} | {kept} |")
    judged = [row for row in rows if row[2] != "log p(D)" and row[5] is not None]
    silent = [row for row in judged if not row[8] and row[9]]
    print(f"\n{sum(row[8] for row in judged)} of {len(judged)} gaps within max(0.1, 3 s.e.) of the truth; "
          f"{len(silent)} off by more without a convergence warning.")
    if any(math.isnan(row[3]) for row in rows):
        print("(NaN: a run without an error bar)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=lambda text: text.split(","), default=None, help="comma list of case names")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0])
    parser.add_argument("--careful", action="store_true", help="fit each family carefully where no closed form is")
    parser.add_argument("--guides", type=lambda text: text.split(","), default=GUIDES, help="comma list of guides")
    parser.add_argument("--warm-start", default=None, help="--warm-start for every study (default: the default)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
