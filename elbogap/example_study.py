"""What the example studies in examples/ share: their command line and how they run a study."""

import argparse

#: the autoguides each example compares
AUTOGUIDES = ["auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal",
              "auto:AutoIAFNormal"]


def comma_list(cast):
    return lambda text: [cast(item) for item in text.split(",")]


def study_parser(description: str, out: str, steps: int) -> argparse.ArgumentParser:
    """The flags every example takes: guides, seeds, steps, lr, out, the reference and ``--quick``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-g", "--guides", type=comma_list(str), default=AUTOGUIDES, help="comma list of guides")
    parser.add_argument("-s", "--seeds", type=comma_list(int), default=[0, 1], help="comma list of seeds")
    parser.add_argument("-n", "--steps", type=int, default=steps, help="SVI steps per guide and seed")
    parser.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (it decays tenfold by the end)")
    parser.add_argument("-o", "--out", default=out, help="output directory")
    parser.add_argument("--reference", choices=["nuts", "ais", "none"], default="nuts",
                        help="where the reference posterior moments come from")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the first guide and seed, 50 steps, short AIS, no reference")
    return parser


def run_study(model, data, args: argparse.Namespace):
    """:func:`elbogap.compare` of ``model`` on ``data`` as the flags say; prints and returns the result."""
    from elbogap.api import compare

    guides, seeds, steps, reference, extra = args.guides, args.seeds, args.steps, args.reference, {}
    if args.quick:
        guides, seeds, steps, reference = guides[:1], seeds[:1], 50, "none"
        extra = {"evidence_steps": 20, "evidence_chains": 16, "iw_samples": 50, "figures": False}
    result = compare(model, guides, data, seeds=seeds, steps=steps, lr=args.lr, out=args.out,
                     reference=reference, progress=True, **extra)
    print(result._repr_markdown_())
    return result
