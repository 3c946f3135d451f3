"""The ``elbogap`` command line; every command is one library call away for notebook users."""

import argparse
import sys
from pathlib import Path

from elbogap.compare import compare
from elbogap.config import FIELDS, Config, flag
from elbogap.errors import UsageError
from elbogap.report import write_results


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def name_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


#: flags with a short form, in the style of Pyro's examples.
SHORT = {"data": "-d", "guides": "-g", "seeds": "-s", "steps": "-n", "out": "-o"}

HELP = {
    "data": "digits | linear-gaussian | a .npy/.npz/.csv file (an .npz may hold train and test)",
    "data_seed": "seed of the train/test split and of synthetic data",
    "test_fraction": "share of the data held out for test when no split is given",
    "model": "vae | linear",
    "likelihood": "bernoulli | gaussian (default: bernoulli for binary data, else gaussian)",
    "latent_dim": "dimension of z (2 allows exact quadrature of log p(x))",
    "hidden_dims": "comma list of hidden widths of decoder and encoder",
    "activation": "relu | softplus | tanh | elu | leaky_relu | gelu | silu",
    "guides": "comma list of guides: diag, full, lowrank, iaf, planar, sylvester, spline, mixture, local, exact",
    "seeds": "comma list of seeds; each guide is trained once per seed",
    "steps": "SVI steps per run",
    "batch_size": "minibatch size",
    "lr": "Adam learning rate",
    "objective": "training objective: elbo (Trace_ELBO) | meanfield (TraceMeanField_ELBO) | iwae (RenyiELBO, alpha=0)",
    "particles": "samples per data point in the training objective (K for iwae)",
    "flow_depth": "number of transforms in a flow guide",
    "mixture_size": "components of the mixture guide",
    "rank": "rank of the lowrank guide's covariance factor",
    "eval_samples": "samples of q per data point for the ELBO",
    "iw_samples": "importance samples per data point for log p(x) when neither exact nor quadrature",
    "quadrature_points": "grid points per axis for 2-D quadrature",
    "out": "output directory for results.json and results.md",
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Config()
    for name in FIELDS:
        default = getattr(defaults, name)
        kind = {"hidden_dims": int_list, "seeds": int_list, "guides": name_list}.get(name)
        if kind is None:
            kind = str if name in ("data", "model", "likelihood", "activation", "objective", "out") else type(default)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        names = [SHORT[name]] if name in SHORT else []
        parser.add_argument(*names, f"--{flag(name)}", dest=name, type=kind, default=default,
                            help=f"{HELP[name]} (default: {shown})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-run lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elbogap",
        description="Measure log p(x) = ELBO + KL(q(z|x) || p(z|x)) for variational families.")
    commands = parser.add_subparsers(dest="command", required=True)
    compare_parser = commands.add_parser(
        "compare", help="train a model with each guide and seed; write results.json and results.md",
        description="Train the model jointly with each guide for each seed, evaluate log p(x), the ELBO, "
                    "its terms and the KL gap on the train and test splits, and write a table.")
    add_config_flags(compare_parser)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{name: getattr(args, name) for name in FIELDS}).validate()


def check_writable(out: Path) -> None:
    """Fail before any training if results could not be saved."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".elbogap-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror}; choose a writable directory") from None


def run_compare(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = Path(config.out)
    check_writable(out)
    results = compare(config, progress=not args.quiet, on_run=lambda partial: write_results(partial, out))
    write_results(results, out)
    if not args.quiet:
        print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"compare": run_compare}[args.command](args)
    except UsageError as error:
        print(f"elbogap: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elbogap: interrupted; finished runs are saved in the output directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
