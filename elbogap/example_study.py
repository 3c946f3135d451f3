"""What the example studies in examples/ share: their command line and how they run a study."""

import argparse

from elbogap.api import compare
from elbogap.protocols.global_latents import GUIDES

#: the autoguides each example compares: a default study's
AUTOGUIDES = list(GUIDES)


def comma_list(cast):
    return lambda text: [cast(item) for item in text.split(",")]


def study_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The flags every example takes: guides, seeds, steps, lr, out, the reference, jobs and ``--quick``; unset, steps
    and lr are elbogap's defaults for models with global latents (train until converged, from lr 0.05)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-g", "--guides", type=comma_list(str), default=AUTOGUIDES, help="comma list of guides")
    parser.add_argument("-s", "--seeds", type=comma_list(int), default=[0, 1], help="comma list of seeds")
    parser.add_argument("-n", "--steps", type=int, default=None,
                        help="the most SVI steps per guide and seed (default: elbogap's cap, 20000; training stops "
                             "once it converges)")
    parser.add_argument("--lr", type=float, default=None, help="Adam's first learning rate (default: elbogap's, 0.05)")
    parser.add_argument("-o", "--out", default=out, help="output directory")
    parser.add_argument("--reference", choices=["nuts", "ais", "none"], default="ais",
                        help="where the reference posterior moments come from (default: the evidence's AIS chains)")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="worker processes (default: elbogap's, one per core, at most one per run)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first guide and seed, 50 steps, short AIS, no reference")
    return parser


def run_study(model, data, args: argparse.Namespace):
    """:func:`elbogap.compare` of ``model`` on ``data`` as the flags say; prints and returns the result."""
    guides, seeds, steps, reference, extra = args.guides, args.seeds, args.steps, args.reference, {}
    if args.quick:
        guides, seeds, steps, reference = guides[:1], seeds[:1], 50, "none"
        extra = {"evidence_start": "prior", "evidence_steps": 20, "evidence_chains": 16, "iw_samples": 50,
                 "figures": False}
    settings = {key: value for key, value in (("steps", steps), ("lr", args.lr), ("jobs", getattr(args, "jobs", None)))
                if value is not None}
    result = compare(model, guides, data, seeds=seeds, out=args.out, reference=reference, progress=True,
                     **settings, **extra)
    print(result._repr_markdown_())
    return result
