"""The ``elbogap`` command line; every command is one library call away for notebook users.

Commands share one configuration (:class:`elbogap.config.Config`): defaults, then a TOML study
file given with ``--config``, then the flags given on the command line.
"""

import argparse
import difflib
import json
import sys
import time
import traceback
from pathlib import Path

from elbogap.calibration.study import calibrate
from elbogap.config import EVALUATION, FIELDS, Config, flag, kind_of, resolve
from elbogap.errors import UsageError
from elbogap.factory import check_rows, fit_family, for_data, guide_label, load_dataset
from elbogap.failures import ProgramFailed, keep_traceback, program_failure
from elbogap.global_latents.report import gap_table
from elbogap.points import save_points
from elbogap.protocols import protocol_for
from elbogap.records import of_whole_data_set
from elbogap.report import caveats, gap_notes, gap_section, split_table, write_results
from elbogap.runs import LOG, Interrupted, NumericalFault, load_run, run_one
from elbogap.stopping import stop_requests
from elbogap.summary import approx_gap_note, on_log_px_points, plus_minus
from elbogap.sweep import RunFailed, compare, save_study
from elbogap.versions import versions


def comma_list(item_type):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",")]
        if not all(items):  # "0,,1" read as 0,1 would hide a slip
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item; write a comma-separated list, e.g. 0,1,2")
        try:
            return [item_type(item) for item in items]
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
        declared = FIELDS[name].metadata
        names_ = ([declared["short"]] if declared["short"] else []) + [f"--{flag(name)}"]
        says_default = "(default" in declared["help"] or "default:" in declared["help"]  # in its own words
        help_text = declared["help"] if says_default else f"{declared['help']} (default: {shown})"
        if kind_of(name) == "bool":
            parser.add_argument(*names_, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*names_, dest=name, type=PARSERS[kind_of(name)], default=argparse.SUPPRESS,
                                help=help_text)
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars, per-run lines or printed table (the files are written as ever)")


#: the flags of ``elbogap evaluate``: the evaluation settings
EVAL_FLAGS = list(EVALUATION)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to look."""

    def error(self, message):
        self.exit(2, f"elbogap: error: {message}; see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the command does not know is named by that command, with the closest flag it
        has (argparse names the extras at the top level, with no suggestion)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((action for action in self._actions if isinstance(action, argparse._SubParsersAction)),
                            None)
            command = commands.choices[parsed.command] if commands else self
            guess = closest_flag(extras, command)
            hint = f" (did you mean {guess}?)" if guess else ""
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def closest_flag(extras: list[str], parser: argparse.ArgumentParser) -> str | None:
    """The first of ``extras`` that is close to one of ``parser``'s long flags, as that flag; the names are compared
    without their dashes, which every flag shares (with them, ``--frob`` was close to ``--jobs``)."""
    names = {flag.lstrip("-"): flag for flag in parser._option_string_actions if flag.startswith("--")}
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=")[0].lstrip("-"), list(names), n=1)
            if close:
                return names[close[0]]
    return None


#: settings a command does not read, left out of its flags (a study file may still hold them)
NOT_READ = {"compare": {"guide", "seed", "simulations", "calibration_draws", "calibration_gaps"},
            "train": {"guides", "seeds", "simulations", "calibration_draws", "calibration_gaps"},
            "calibrate": {"guide", "seed"}}


def flags_of(command: str) -> list[str]:
    """The settings ``command`` takes as flags: every one it reads (:data:`NOT_READ`)."""
    return [name for name in FIELDS if name not in NOT_READ[command]]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="elbogap", description="Measure log p(x) = ELBO + KL(q(z|x) || p(z|x)) for variational families.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)
    compare = commands.add_parser(
        "compare", help="train with each guide and seed; write results.json/.csv/.md and figures",
        description="Train the model jointly with each guide for each seed, evaluate log p(x), the ELBO, its "
                    "terms and the KL gap on the train and test splits, and write tables and figures.")
    add_config_flags(compare, flags_of("compare"))
    train = commands.add_parser("train", help="train one model and guide into a run directory",
                                description="Train the model with --guide and --seed; save a run directory "
                                            "(checkpoint, run.json, train.log, results, figures) at --out.")
    add_config_flags(train, flags_of("train"))
    evaluate = commands.add_parser("evaluate", help="evaluate a saved run directory",
                                   description="Evaluate the model and guide saved in RUN_DIR on both splits.")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--refit", action="store_true",
                          help="with --guide B: fit family B to the saved model (model frozen) and evaluate it "
                               "and its q*; shows how the decoder adapted to the guide it was trained with")
    add_config_flags(evaluate, [*EVAL_FLAGS, "guide", "steps"])
    calibrate = commands.add_parser(
        "calibrate", help="fit each guide to data sets simulated from the model; SBC and VSBC per latent site",
        description="Simulate --simulations data sets from the model's prior predictive (shaped like --data), fit "
                    "each guide to each as compare does, and test where each true latent falls among q's draws "
                    "(SBC: uniform ranks; VSBC: symmetric ranks); write results.json/.md, ranks.png, pvalues.png.")
    add_config_flags(calibrate, flags_of("calibrate"))
    plot = commands.add_parser("plot", help="redraw the figures of a results directory",
                               description="Redraw the figures of RESULTS_DIR from results.json and run checkpoints.")
    plot.add_argument("results_dir", metavar="RESULTS_DIR")
    plot.add_argument("-q", "--quiet", action="store_true", help="do not list the files written")
    return parser


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    command = (args.command, set(flags_of(args.command))) if args.command in NOT_READ else None
    return resolve(given, getattr(args, "config", None), base, command)


def check_writable(out: Path) -> None:
    """Fail before any training if results could not be saved; the folders made to find out are removed again, so
    input refused after this leaves no empty ``--out`` behind (the run makes it when it has something to write)."""
    try:
        made = [path for path in (out, *out.parents) if not path.exists()]  # deepest first
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".elbogap-write-test"
        probe.write_text("")
        probe.unlink()
        for path in made:
            path.rmdir()
    except OSError as error:
        raise UsageError(f"cannot write to --out {out}: {error.strerror}; choose a writable directory") from None


def finish(results: dict, out: Path, config: Config, quiet: bool, started: float | None = None) -> None:
    save_study(results, out, config, started)
    if not quiet:
        print((out / "results.md").read_text())
    print(f"wrote results.json, results.csv, results.md and config.toml to {out}", file=sys.stderr)


def run_compare(args) -> int:
    config = config_from_args(args)
    out = Path(config.out)
    check_writable(out)
    results = compare(config, out, progress=not args.quiet, on_run=lambda partial: write_results(partial, out))
    finish(results, out, config, args.quiet, args.started)
    return 0


def run_train(args) -> int:
    config = config_from_args(args)
    config = config.replace(seeds=[config.seed], guides=[config.guide])  # the study of one run, as its report reads it
    out = Path(config.out)
    check_writable(out)
    data = load_dataset(config)
    check_rows(config, data)
    config = for_data(config, data, config.guide)
    try:
        run = run_one(config, data, config.guide, config.seed, out, progress=not args.quiet, stops=stop_requests)
    except (UsageError, Interrupted, NumericalFault):
        raise
    except Exception as error:  # as a sweep's run: one line where a user's program raised, the traceback kept
        details = traceback.format_exc().rstrip()
        keep_traceback(out, details)
        failure = program_failure(error, [config.model, config.guide])
        if failure is None:
            raise
        raise ProgramFailed(f"{failure}; the traceback is in {out / LOG} (--debug prints it)",
                            details if config.debug else None) from None
    results = {"command": "train", "config": config.to_dict(), "versions": versions(),
               "runs": [{**run, "run_dir": "."}]}
    finish(results, out, config, args.quiet, args.started)
    return 0


def run_evaluate(args) -> int:
    config, data, model, guide, state = load_run(args.run_dir, getattr(args, "device", None))
    trained_with = state["guide_name"]
    config = config_from_args(args, base=config.replace(guide=trained_with, bdmc=0))
    summary = (protocol_for(model).bdmc(model, data, config, state["seed"], args.run_dir, progress=not args.quiet)
               if config.bdmc else None)
    if summary is not None and "datasets" in summary:  # simulated data sets of a model with global latents
        print(f"BDMC on {summary['datasets']} data sets simulated from the model's prior predictive: "
              f"{summary['lower']:.3f} (± {summary['lower_stderr']:.3f}) <= log p(D*) <= {summary['upper']:.3f} "
              f"(± {summary['upper_stderr']:.3f}); width {summary['width']:.3f} ± {summary['width_stderr']:.3f} "
              f"nats\n{summary['reading']}")
        return 0
    if summary is not None:  # simulated points
        print(f"BDMC on {summary['points']} points simulated from the model: "
              f"{summary['lower']:.3f} (± {summary['lower_stderr']:.3f}) <= log p(x) <= "
              f"{summary['upper']:.3f} (± {summary['upper_stderr']:.3f}); width {summary['width']:.3f} ± "
              f"{summary['width_stderr']:.3f} nats at "
              f"{config.ais_chains} chains x {config.ais_steps} temperatures x {config.leapfrog_steps} leapfrog steps; "
              f"wrote bdmc.json and bdmc.npz to {args.run_dir}\n{summary['reading']}")
        return 0
    if config.guide != trained_with:
        if not args.refit:
            raise UsageError(f"{args.run_dir} was trained with guide {trained_with}; evaluating family "
                             f"{config.guide} on its model needs --refit")
        guide = fit_family(model, config, data, config.guide, state["seed"])
    metrics = protocol_for(model).evaluate(model, guide, data, config, state["seed"], progress=not args.quiet,
                                           run_dir=args.run_dir)
    suffix = "" if config.guide == trained_with else f"-{config.guide}"
    save_points(Path(args.run_dir) / f"evaluation-points{suffix}.npz", metrics)  # the run's points.npz stays its own
    record = {"guide": guide_label(config.guide), "guide_spec": config.guide, "trained_with": trained_with,
              "seed": state["seed"], **metrics}  # named as compare names it (a program's stem.name)
    saved_run = Path(args.run_dir) / "run.json"
    if config.guide == trained_with and saved_run.is_file():  # the run's own fit: whether it converged, as compare said
        record["converged"] = json.loads(saved_run.read_text())["run"].get("converged")
    name = f"evaluation{suffix}.json"
    (Path(args.run_dir) / name).write_text(json.dumps(record, indent=2))
    if of_whole_data_set(metrics):  # one unit, the whole data set, as a model with global latents gives
        if not args.quiet:
            print("\n".join(gap_table([record])) + "\n")
        keys = ("log_px", "log_px_stderr", "elbo", "elbo_stderr", "kl_gap", "kl_gap_stderr", "log_px_iwae",
                "khat_mean", "log_px_warning")
        print(json.dumps({"train": {k: metrics["train"][k] for k in keys if k in metrics["train"]}}))
        return 0
    splits = [split for split in ("test", "train") if split in metrics]
    if not args.quiet:
        for split in splits:
            print(f"## {split}\n" + "\n".join(split_table([record], split)) + f"\n\n{plus_minus([1])}"
                  + "".join(caveats([record], split)) + "\n")
        if any("approx_gap" in metrics[split] for split in splits):
            print("## approximation vs amortization\n\n" + "\n".join(gap_section([record], splits)))
    else:
        for note in gap_notes([record], splits):
            print(f"elbogap: {note.removeprefix('- ')}", file=sys.stderr)
    print(json.dumps({split: evaluation_line(metrics[split]) for split in splits}))
    return 0


#: what ``elbogap evaluate`` prints as JSON per split: the same points side by side, the gap split with its errors
EVALUATION_KEYS = ("log_px_points", "log_px", "log_px_stderr", "elbo_log_px_points", "kl_gap", "kl_gap_stderr",
                   "num_points", "elbo", "elbo_stderr", "log_px_iwae", "gap_points", "approx_gap",
                   "approx_gap_stderr", "amort_gap", "amort_gap_stderr", "approx_gap_bound", "log_px_method",
                   "log_px_warning")


def evaluation_line(metrics: dict) -> dict:
    """A split's numbers for ``elbogap evaluate``'s JSON line, with the note on its approximation gap if any."""

    metrics = on_log_px_points(metrics)
    line = {key: metrics[key] for key in EVALUATION_KEYS if key in metrics}
    if note := approx_gap_note(metrics):
        line["approx_gap_note"] = note
    return line


def run_calibrate(args) -> int:
    from elbogap.calibration.report import write_calibration  # matplotlib loads only where figures are drawn

    config = config_from_args(args)
    out = Path(config.out)
    check_writable(out)
    results = calibrate(config, progress=not args.quiet,
                        on_simulation=lambda partial: write_calibration(partial, out, figures=False))
    written = write_calibration(results, out, figures=config.figures, final=True)
    if not args.quiet:
        print((out / "results.md").read_text())
    names = [str(Path(path).relative_to(out)) if Path(path).is_relative_to(out) else str(path) for path in written]
    print(f"wrote {', '.join(names)} to {out}", file=sys.stderr)  # arviz/ files named with their folder
    return 0


def run_plot(args) -> int:
    from elbogap.plots import make_figures  # matplotlib loads only where figures are drawn

    for path in make_figures(args.results_dir):
        if not args.quiet:
            print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    args.started = started
    commands = {"compare": run_compare, "train": run_train, "evaluate": run_evaluate, "calibrate": run_calibrate,
                "plot": run_plot}
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
    except ProgramFailed as failure:  # the user's program raised: bad input, as a refused one is
        if failure.details:
            print(failure.details, file=sys.stderr)
        print(f"elbogap: error: {failure}", file=sys.stderr)
        return 2
    except RunFailed as failure:
        print(f"elbogap: error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("elbogap: interrupted; finished runs are saved in the output directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
