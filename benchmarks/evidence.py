"""log p(D) of models with global latents, before and after: AIS from the prior against AIS from a fitted reference.

    python benchmarks/evidence.py [--cases eight-schools,logistic,...] [--repeats 1]

For each case of ``benchmarks/global_cases.py``, side by side in one run, on one intra-op thread (as runs use):

- *before*: AIS from the prior at the former defaults, 256 chains x 2000 temperatures x 10 leapfrog steps
  (``--evidence-start prior --evidence-steps 2000``, ``--leapfrog-steps 10``);
- *after*: elbogap's default (``elbogap.global_latents.evidence``): tempered SMC and SVI place a Gaussian
  reference, then AIS from it with the temperatures a pilot run says reach a standard error of 0.02.

Each row: seconds, the estimate, its standard error, its error against the exact value (where one exists) in
standard errors, and the reference's effective draws (the weighted final states).
"""

import argparse
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.global_cases import cases  # noqa: E402
from elbogap.global_latents.evidence import EvidenceSettings, ais_evidence  # noqa: E402
from elbogap.global_latents.model import GlobalLatentModel  # noqa: E402
from elbogap.inference.ais import AISSettings  # noqa: E402

BEFORE = AISSettings(steps=2000, chains=256, leapfrog_steps=10)



def main(args) -> None:
    torch.set_num_threads(1)
    print("| case | latents | estimator | seconds | log p(D) | s.e. | error (exact - estimate) | error / s.e. "
          "| temperatures | effective draws | form annealed (pilots: as written, non-centred) "
          "| check from the prior (s) | switched to the prior |")
    print("|---" * 13 + "|")
    for case in cases(args.cases):
        model = GlobalLatentModel(case.program, case.data, case.name)
        estimators = [("AIS from a fitted reference, checked from the prior", EvidenceSettings())]
        if args.as_written:
            estimators.insert(0, ("the same, the program as written only", EvidenceSettings(non_centred=False)))
        if args.without_modes_check:
            estimators.insert(0, ("the same, without the modes check", EvidenceSettings(modes_check=False)))
        if args.before:
            estimators.insert(0, ("before: AIS from the prior", BEFORE))
        for label, settings in estimators:
            for repeat in range(args.repeats):
                pyro.set_rng_seed(repeat)
                started = time.perf_counter()
                evidence = ais_evidence(model, case.data, settings)
                seconds = time.perf_counter() - started
                effective = float(evidence.log_w.double().softmax(0).pow(2).sum().reciprocal())
                if case.log_evidence is None:
                    error, ratio = "–", "–"
                else:
                    error = f"{case.log_evidence - evidence.log_evidence:+.3f}"
                    ratio = f"{(case.log_evidence - evidence.log_evidence) / evidence.stderr:+.1f}"
                check = evidence.stages.get("prior_check") if isinstance(evidence.stages, dict) else None
                checked = "–" if not check else (f"{check['log_evidence']:.3f} ± {check['stderr']:.3f} "
                                                 f"({check['seconds']:.1f})")
                coordinates = evidence.stages.get("coordinates") if isinstance(evidence.stages, dict) else None
                form = "as written" if not coordinates else (
                    f"{coordinates['chosen']} ({coordinates['pilots']['as written']['log_evidence']:.3f}, "
                    f"{coordinates['pilots']['non-centred']['log_evidence']:.3f})")
                switched = "–" if not check else ("**yes**, from " + f"{check['switched']['log_evidence']:.3f}"
                                                  if check.get("switched") else "no")
                print(f"| {case.name} | {model.latent_dim} | {label} | {seconds:.1f} | {evidence.log_evidence:.3f} | "
                      f"{evidence.stderr:.3f} | {error} | {ratio} | {evidence.steps} | {effective:.0f} | {form} | "
                      f"{checked} | {switched} |", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=lambda text: text.split(","), default=None, help="comma list of case names")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each estimator per case (seeds 0, 1, ...)")
    parser.add_argument("--before", action="store_true", help="also the former default, AIS from the prior")
    parser.add_argument("--as-written", action="store_true",
                        help="also the default without its non-centred form (the program as written only)")
    parser.add_argument("--without-modes-check", action="store_true",
                        help="also the default without its check for modes the reference missed (before 2026-12-06)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
