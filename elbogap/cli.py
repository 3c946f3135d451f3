"""The ``elbogap`` command line; every command is one library call away for notebook users.

Commands share one configuration (:class:`elbogap.config.Config`): defaults, then a TOML study
file given with ``--config``, then the flags given on the command line.
"""

import argparse
import json
import sys
from pathlib import Path

from elbogap.config import FIELDS, Config, flag, kind_of, resolve
from elbogap.errors import UsageError
from elbogap.report import write_results

HELP = {
    "data": "digits | fashion-mnist | mnist | linear-gaussian | a .npy/.npz/.csv file (.npz: train and test)",
    "data_dir": "directory of the IDX files for fashion-mnist (default /usr/share/datasets/fashion-mnist) or mnist",
    "binarize": "threshold (at 0.5) | static (sampled once) | dynamic (every epoch) | none "
                "(default: threshold for image sets, none otherwise)",
    "train_size": "use a random subset of this many training points",
    "test_size": "use a random subset of this many test points",
    "data_seed": "seed of the train/test split, subsets, binarization and synthetic data",
    "test_fraction": "share of the data held out for test when no split is given",
    "model": "vae | linear | path/to/file.py:name | package.module:name (your own Pyro model: a function, a method "
             "or a class with .model)",
    "likelihood": "bernoulli | gaussian (default: bernoulli for binary data, else gaussian)",
    "latent_dim": "dimension of z (2 allows exact quadrature of log p(x))",
    "hidden_dims": "comma list of hidden widths of decoder and encoder",
    "activation": "relu | softplus | tanh | elu | leaky_relu | gelu | silu",
    "guide": "the guide of elbogap train",
    "seed": "the seed of elbogap train",
    "guides": "comma list of guides: diag, full, lowrank, iaf, planar, sylvester, spline, mixture, local, exact, "
              "or your own guide programs path/to/file.py:name",
    "seeds": "comma list of seeds; each guide is trained once per seed",
    "steps": "SVI steps per run",
    "epochs": "passes over the training data per run (overrides --steps)",
    "batch_size": "minibatch size",
    "lr": "Adam learning rate",
    "lr_decay": "factor the learning rate decays to by the end of training (1 = constant)",
    "kl_warmup": "epochs over which the KL weight rises from 0 to 1 (0 = off)",
    "objective": "elbo (Trace_ELBO) | meanfield (TraceMeanField_ELBO) | iwae (RenyiELBO, alpha=0)",
    "particles": "samples per data point in the training objective (K for iwae)",
    "jobs": "runs of a sweep trained at once, each in its own process with torch's threads shared out (compare)",
    "backend": "local (this machine: one run at a time, or --jobs processes) | ray (Ray tasks on the cluster at "
               "--ray-address; --out must be shared by every node)",
    "ray_address": "the Ray cluster of --backend ray, e.g. auto or HOST:6379 (default: $RAY_ADDRESS, else a Ray "
                   "started for this command)",
    "cpus_per_run": "CPUs each run asks for and torch threads it uses (default: all cores one run at a time, cores "
                    "shared among --jobs, 1 per Ray task)",
    "gpus_per_run": "GPUs each Ray task asks for (fractions share a GPU); use with --device cuda",
    "device": "cpu, cuda or cuda:N: where models, guides and data live",
    "jit": "compile the elbo objective with Pyro's JitTrace_ELBO (elbogap's own models and guides, except mixture)",
    "flow_depth": "number of transforms in a flow guide",
    "mixture_size": "components of the mixture guide",
    "rank": "rank of the lowrank guide's covariance factor",
    "eval_samples": "samples of q per data point for the ELBO",
    "iw_samples": "importance samples per data point for log p(x) when neither exact nor quadrature",
    "quadrature_points": "grid points per axis for 2-D quadrature",
    "log_px": "auto | exact | quadrature | iwae | ais: how log p(x) is computed (auto: exact or quadrature where "
              "they apply, else IWAE on every point and guide-independent AIS on --ais-points and the gap points)",
    "ais_points": "points per split that get AIS under --log-px auto (the gap points are among them)",
    "ais_steps": "AIS intermediate distributions (temperatures) per chain",
    "ais_chains": "AIS chains per data point",
    "leapfrog_steps": "leapfrog steps per HMC transition of AIS",
    "ais_init": "prior (guide-independent) | q (anneal from the guide's q(z|x), a diagnostic)",
    "ais_target_accept": "HMC acceptance rate the AIS pilot run tunes step sizes toward",
    "bdmc": "simulate N (z, x) pairs from each trained model and sandwich their log p(x) between forward and "
            "reverse AIS at the AIS settings; writes bdmc.json and bdmc.npz in the run directory (0: off)",
    "gap_points": "points per split on which q* is refit to split the gap into approximation and amortization "
                  "(0: off)",
    "dynamics_points": "test points on which q* is refit at every evaluation during training, for the stacked "
                       "gap bands of gap_over_training.png (0: off; costs a refit per evaluation)",
    "mode": "joint (train model and guide together) | fixed-model (train the model once with --reference-guide, "
            "then fit every guide to that same model)",
    "reference_guide": "the guide the model is trained with in --mode fixed-model",
    "eval_every": "steps between evaluations during training (0: ten evaluations per run)",
    "curve_points": "data points per split used by the evaluations during training",
    "checkpoint_every": "steps between checkpoints (0: only at the end)",
    "figures": "draw PNG figures into the output directory",
    "on_nan": "stop | skip: on a NaN/inf loss or parameter, stop the command, or mark the run failed and go on",
    "resume": "continue the runs saved in --out (after an interruption) instead of refusing to overwrite them",
    "out": "output directory (a run directory for train)",
}

#: flags with a short form, in the style of Pyro's examples.
SHORT = {"data": "-d", "guides": "-g", "seeds": "-s", "steps": "-n", "out": "-o", "jobs": "-j"}


def comma_list(item_type):
    def parse(text: str) -> list:
        try:
            return [item_type(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {item_type.__name__}s, e.g. 0,1,2") from None
    return parse


PARSERS = {"list[int]": comma_list(int), "list[str]": comma_list(str), "int": int, "float": float, "str": str}


def add_config_flags(parser: argparse.ArgumentParser, names=None) -> None:
    """One flag per setting; flags not given stay unset, so the study file and defaults apply."""
    defaults = Config()
    parser.add_argument("--config", metavar="STUDY.toml", help="TOML study file; flags given here override it")
    for name in names or FIELDS:
        default = getattr(defaults, name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        names_ = ([SHORT[name]] if name in SHORT else []) + [f"--{flag(name)}"]
        help_text = f"{HELP[name]} (default: {shown})"
        if kind_of(name) == "bool":
            parser.add_argument(*names_, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*names_, dest=name, type=PARSERS[kind_of(name)], default=argparse.SUPPRESS,
                                help=help_text)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or per-run lines")


EVAL_FLAGS = ["eval_samples", "iw_samples", "quadrature_points", "gap_points", "log_px", "ais_points", "ais_steps",
              "ais_chains", "leapfrog_steps", "ais_init", "ais_target_accept", "bdmc"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to look."""

    def error(self, message):
        self.exit(2, f"elbogap: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="elbogap", description="Measure log p(x) = ELBO + KL(q(z|x) || p(z|x)) for variational families.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)
    compare = commands.add_parser(
        "compare", help="train with each guide and seed; write results.json/.csv/.md and figures",
        description="Train the model jointly with each guide for each seed, evaluate log p(x), the ELBO, its "
                    "terms and the KL gap on the train and test splits, and write tables and figures.")
    add_config_flags(compare)
    train = commands.add_parser("train", help="train one model and guide into a run directory",
                                description="Train the model with --guide and --seed; save a run directory "
                                            "(checkpoint, run.json, train.log, results, figures) at --out.")
    add_config_flags(train)
    evaluate = commands.add_parser("evaluate", help="evaluate a saved run directory",
                                   description="Evaluate the model and guide saved in RUN_DIR on both splits.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--refit", action="store_true",
                          help="with --guide B: fit family B to the saved model (model frozen) and evaluate it "
                               "and its q*; shows how the decoder adapted to the guide it was trained with")
    add_config_flags(evaluate, [*EVAL_FLAGS, "guide", "steps"])
    plot = commands.add_parser("plot", help="redraw the figures of a results directory",
                               description="Redraw the figures of RESULTS_DIR from results.json and run checkpoints.")
    plot.add_argument("results_dir", metavar="RESULTS_DIR")
    plot.add_argument("-q", "--quiet", action="store_true", help="do not list the files written")
    return parser


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    return resolve(given, getattr(args, "config", None), base)


def check_writable(out: Path) -> None:
    """Fail before any training if results could not be saved."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".elbogap-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror}; choose a writable directory") from None


def finish(results: dict, out: Path, config: Config, quiet: bool) -> None:
    from elbogap.sweep import save_study

    save_study(results, out, config)
    if not quiet:
        print((out / "results.md").read_text())
    print(f"wrote results.json, results.csv, results.md and config.toml to {out}", file=sys.stderr)


def run_compare(args) -> int:
    from elbogap.sweep import compare

    config = config_from_args(args)
    out = Path(config.out)
    check_writable(out)
    results = compare(config, out, progress=not args.quiet, on_run=lambda partial: write_results(partial, out))
    finish(results, out, config, args.quiet)
    return 0


def run_train(args) -> int:
    from elbogap.runs import load_dataset, run_one
    from elbogap.versions import versions

    config = config_from_args(args)
    out = Path(config.out)
    check_writable(out)
    data = load_dataset(config)
    run = run_one(config, data, config.guide, config.seed, out, progress=not args.quiet)
    results = {"config": config.to_dict(), "versions": versions(), "runs": [{**run, "run_dir": "."}]}
    finish(results, out, config, args.quiet)
    return 0


def run_evaluate(args) -> int:

    from elbogap.report import table
    from elbogap.runs import evaluate_splits, fit_family, load_run

    config, data, model, guide, state = load_run(args.run_dir, getattr(args, "device", None))
    trained_with = state["guide_name"]
    config = config_from_args(args, base=config.replace(guide=trained_with, bdmc=0))
    if config.bdmc:
        from elbogap.runs import run_bdmc

        summary = run_bdmc(model, data, config, state["seed"], args.run_dir)
        print(f"BDMC on {summary['points']} points simulated from the model: "
              f"{summary['lower']:.3f} (± {summary['lower_stderr']:.3f}) <= log p(x) <= "
              f"{summary['upper']:.3f} (± {summary['upper_stderr']:.3f}); width {summary['width']:.3f} nats at "
              f"{config.ais_chains} chains x {config.ais_steps} temperatures x {config.leapfrog_steps} leapfrog steps; "
              f"wrote bdmc.json and bdmc.npz to {args.run_dir}")
        return 0
    if config.guide != trained_with:
        if not args.refit:
            raise UsageError(f"{args.run_dir} was trained with guide {trained_with}; evaluating family "
                             f"{config.guide} on its model needs --refit")
        guide = fit_family(model, config, data, config.guide, state["seed"])
    metrics = evaluate_splits(model, guide, data, config, state["seed"])
    record = {"guide": config.guide, "trained_with": trained_with, "seed": state["seed"], **metrics}
    name = "evaluation.json" if config.guide == trained_with else f"evaluation-{config.guide}.json"
    (Path(args.run_dir) / name).write_text(json.dumps(record, indent=2))
    if not args.quiet:
        for split in ("test", "train"):
            print(f"## {split}\n" + "\n".join(table([record], split)) + "\n")
    keys = ("log_px", "elbo", "kl_gap", "approx_gap", "amort_gap", "log_px_method")
    print(json.dumps({split: {k: metrics[split][k] for k in keys if k in metrics[split]} for split in metrics}))
    return 0


def run_plot(args) -> int:
    from elbogap.plots import make_figures

    for path in make_figures(args.results_dir):
        if not args.quiet:
            print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from elbogap.runs import Interrupted, NumericalFault
    from elbogap.sweep import RunFailed

    args = build_parser().parse_args(argv)
    commands = {"compare": run_compare, "train": run_train, "evaluate": run_evaluate, "plot": run_plot}
    try:
        return commands[args.command](args)
    except UsageError as error:
        print(f"elbogap: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"elbogap: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except NumericalFault as fault:
        print(f"elbogap: error: {fault}; --on-nan skip goes on with the other runs", file=sys.stderr)
        return 1
    except RunFailed as failure:
        print(f"elbogap: error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("elbogap: interrupted; finished runs are saved in the output directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
