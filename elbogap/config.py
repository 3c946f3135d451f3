"""One configuration for every command: data, model, guides, training, evaluation, output.

Settings come from three layers, later ones winning: the defaults here, a TOML study file
(``--config study.toml``; keys are the long flag names with underscores, lists are TOML
arrays), and the command-line flags.
"""

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from elbogap.device import resolve_device
from elbogap.errors import UsageError
from elbogap.global_latents.evidence import EvidenceSettings
from elbogap.guides import families
from elbogap.inference.ais import INITS as AIS_INITS
from elbogap.inference.ais import AISSettings
from elbogap.inference.convergence import SCHEDULES
from elbogap.inference.log_px import settings as log_px_settings
from elbogap.inference.objectives import GRADIENTS, OBJECTIVES, check_gradient
from elbogap.inference.whitened import STARTS as EVIDENCE_STARTS
from elbogap.user_model import is_user_model

#: what a setting changes, and so what a resumed run compares: ``result`` (what training computes; a
#: checkpoint from other values is refused), ``evaluation`` (the evaluation after training; a finished run
#: is re-evaluated, training kept) and ``control`` (how a command runs; free to change on resume).
ROLES = ("result", "evaluation", "control")


def setting(default, help: str, *, short: str | None = None, least: float | None = None, positive: bool = False,
            choices: tuple | None = None, role: str = "result"):
    """Declare a setting once: its default, help text, short flag, bounds, allowed values and role (see ROLES).

    The command-line flags, the study file's checks and ``--resume``'s comparison are derived from it.
    """
    assert role in ROLES
    metadata = {"help": help, "short": short, "least": least, "positive": positive, "choices": choices,
                "role": role}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    """Every setting of a run or a sweep; the command-line flags are these names with dashes.

    ``likelihood=None`` picks Bernoulli for binary data and Gaussian otherwise;
    ``binarize=None`` thresholds image data at 0.5 and leaves other data as it is;
    ``epochs``, when set, overrides ``steps``.
    """

    data: str = setting("digits", "digits | fashion-mnist | mnist | linear-gaussian | a .npy/.npz/.csv file (.npz: "
                                  "train and test)", short="-d")
    data_dir: str | None = setting(None, "directory of the IDX files for fashion-mnist (default "
                                         "/usr/share/datasets/fashion-mnist) or mnist")
    binarize: str | None = setting(None, "threshold (at 0.5) | static (sampled once) | dynamic (every epoch) | none "
                                         "(default: threshold for image sets, none otherwise)",
                                         choices=("threshold", "static", "dynamic", "none"))
    train_size: int | None = setting(None, "use a random subset of this many training points", positive=True)
    test_size: int | None = setting(None, "use a random subset of this many test points", positive=True)
    data_seed: int = setting(0, "seed of the train/test split, subsets, binarization and synthetic data")
    test_fraction: float = setting(0.2, "share of the data held out for test when no split is given")
    model: str = setting("vae", "vae | linear | path/to/file.py:name | package.module:name (your own Pyro model: a "
                                "function, a method or a class with .model)")
    likelihood: str | None = setting(None, "bernoulli | gaussian (default: bernoulli for binary data, else gaussian)")
    latent_dim: int = setting(2, "dimension of z (1 or 2 allow quadrature of log p(x))", least=1)
    hidden_dims: list[int] = setting([128], "comma list of hidden widths of decoder and encoder")
    activation: str = setting("softplus", "relu | softplus | tanh | elu | leaky_relu | gelu | silu")
    guide: str = setting("diag", "the guide of elbogap train", role="control")
    seed: int = setting(0, "the seed of elbogap train", role="control")
    guides: list[str] = setting(["diag", "full", "iaf", "planar"], f"comma list of guides: {', '.join(families())}, "
                                                                   "Pyro's autoguides auto:AutoNormal, ..., or your "
                                                                   "own guide programs path/to/file.py:name (for a "
                                                                   "model with global latents the default is "
                                                                   "auto:AutoNormal, auto:AutoMultivariateNormal, "
                                                                   "auto:AutoLowRankMultivariateNormal, "
                                                                   "auto:AutoIAFNormal, the IAF up to 1,000 "
                                                                   "latents)",
                                                                   short="-g", role="control")
    seeds: list[int] = setting([0, 1], "comma list of seeds; each guide is trained once per seed",
                                       short="-s", role="control")
    steps: int | None = setting(None, "SVI steps per run; with --schedule converge, the most (default: the kind of "
                                      "model's, 2000 for per-point latents, a cap of 20000 for global latents)",
                                short="-n", least=0)
    schedule: str = setting("auto", "fixed (--steps steps, the learning rate decaying by --lr-decay) | converge (drop "
                                    "the learning rate tenfold whenever the ELBO stops rising; stop once a drop gains "
                                    "less than --convergence-tol, or at --steps) | auto (fixed for per-point latents, "
                                    "converge for global latents)", choices=("auto", *SCHEDULES))
    convergence_tol: float | None = setting(None, "the ELBO (nats: per data point for per-point latents, the whole "
                                                  "data set's for global latents) a fit may still gain and count as "
                                                  "converged (default 0.01 and 0.02)", positive=True)
    warm_start: str = setting("mean-field", "where a family that contains the mean field starts, on a model with "
                                            "global latents, in compare and train (auto:AutoMultivariateNormal, "
                                            "auto:AutoLowRankMultivariateNormal): at the seed's AutoNormal fit, "
                                            "trained once per seed, keeping the better of that start and where "
                                            "training goes under --schedule converge, and auto:AutoIAFNormal "
                                            "trained from Pyro's start and again from that fit, keeping the fit "
                                            "with the higher ELBO (mean-field); or where Pyro starts it, once "
                                            "(off)",
                              choices=("mean-field", "off"))
    epochs: float | None = setting(None, "passes over the training data per run (overrides --steps)", positive=True)
    batch_size: int = setting(128, "minibatch size", least=1)
    lr: float | None = setting(None, "Adam learning rate (default: the kind of model's, 0.003 for per-point latents, "
                                     "0.05 for global latents, 0.01 for their autoregressive flows, from which "
                                     "--schedule converge drops it)",
                               positive=True)
    lr_decay: float = setting(0.1, "factor the learning rate decays to by the end of training (1 = constant)")
    kl_warmup: float = setting(0.0, "epochs over which the KL weight rises from 0 to 1 (0 = off)", least=0)
    objective: str = setting("elbo", "elbo (Trace_ELBO) | meanfield (TraceMeanField_ELBO) | iwae (importance-weighted "
                                    "bound)",
                             choices=OBJECTIVES)
    particles: int | None = setting(None, "samples per data point in the training objective (K for iwae; default: "
                                          "the kind of model's, 1 for per-point latents, 32 for global latents)",
                                    least=1)
    gradient: str = setting("reparam", "reparam | stl (sticking the landing, with --objective elbo or meanfield) | "
                                       "dreg (doubly reparameterized, with --objective iwae): the estimator of the "
                                       "training gradient", choices=tuple(GRADIENTS))
    jit: bool = setting(True, "compile the elbo objective with Pyro's JitTrace_ELBO (elbogap's own models and guides, "
                              "except mixture; your own model in q* refits, unless its code takes a value from a "
                              "tensor)")
    device: str = setting("cpu", "cpu, cuda or cuda:N: where models, guides and data live")
    flow_depth: int = setting(2, "number of transforms in a flow guide", least=1)
    mixture_size: int = setting(3, "components of the mixture guide", least=1)
    rank: int = setting(1, "rank of the lowrank guide's covariance factor", least=1)
    eval_samples: int = setting(256, "samples of q per data point for the ELBO", least=1, role="evaluation")
    iw_samples: int = setting(1000, "importance samples per data point for log p(x) when neither exact nor quadrature "
                                    "(at least --eval-samples: the ELBO's draws are among them)", least=1,
                              role="evaluation")
    quadrature_points: int = setting(24, "grid points per axis for quadrature (1-D and 2-D latents)", least=4,
                                     role="evaluation")
    log_px: str = setting("auto", f"{' | '.join(log_px_settings())}: how log p(x) is computed (auto: exact or "
                                  "quadrature where they apply, else IWAE on every point and guide-independent AIS on "
                                  "--ais-points and the gap points; for global latents auto and ais are AIS from a "
                                  "fitted reference, and an estimator of elbogap/estimators, e.g. prior-is, runs on "
                                  "the whole data set)", role="evaluation", choices=log_px_settings())
    ais_points: int = setting(100, "points per split that get AIS under --log-px auto (the gap points are among them)",
                                   least=0, role="evaluation")
    ais_steps: int = setting(500, "AIS intermediate distributions (temperatures) per chain", least=1, role="evaluation")
    ais_chains: int = setting(16, "AIS chains per data point", least=1, role="evaluation")
    leapfrog_steps: int = setting(10, "leapfrog steps per HMC transition of AIS", least=1, role="evaluation")
    ais_init: str = setting("laplace", "laplace (from Gaussians at each point's posterior modes) | prior (both "
                                       "guide-independent) | q (anneal from the guide's q(z|x), a diagnostic)",
                                     role="evaluation", choices=AIS_INITS)
    ais_target_accept: float = setting(0.65, "HMC acceptance rate the AIS pilot run tunes step sizes toward",
                                             role="evaluation")
    bdmc: int = setting(0, "simulate N (z, x) pairs from each trained model and sandwich their log p(x) between "
                           "forward and reverse AIS at the AIS settings; writes bdmc.json and bdmc.npz in the run "
                           "directory (0: off)", least=0, role="evaluation")
    gap_points: int = setting(64, "points per split on which q* is refit to split the gap into approximation and "
                                  "amortization (0: off)", least=0, role="evaluation")
    train_eval_points: int = setting(1000, "training points evaluated after training, a seeded subset (0: the whole "
                                           "split; the test split is always evaluated whole)",
                                           least=0, role="evaluation")
    dynamics_points: int = setting(0, "test points on which q* is refit at every evaluation during training, for the "
                                      "stacked gap bands of gap_over_training.png (0: off; costs a refit per "
                                      "evaluation)", least=0)
    evidence_start: str = setting("gaussian", "models with global latents: where the AIS chains of log p(D) start: "
                                              "gaussian (a reference fitted once per seed by tempered SMC and SVI, "
                                              "the chains moving in its whitened coordinates) | prior (the earlier "
                                              "estimator, --evidence-steps temperatures from the prior)",
                                  choices=EVIDENCE_STARTS, role="evaluation")
    evidence_stderr: float = setting(0.02, "models with global latents: the standard error (nats) the temperatures of "
                                           "log p(D) are chosen for, from a pilot run", positive=True,
                                     role="evaluation")
    evidence_steps: int = setting(4000, "models with global latents: the most AIS temperatures of log p(D) (from the "
                                        "prior: exactly these)", least=1, role="evaluation")
    evidence_chains: int = setting(256, "models with global latents: AIS chains for log p(D) (evaluated together, "
                                        "nearly free)", least=2, role="evaluation")
    holdout: float = setting(0.0, "models with global latents: share of D's rows held out (a seeded subset); the "
                                  "posterior conditions on the rest, and the held-out rows get their log predictive "
                                  "density log p(D_test | D_train) (0: none, every row is D)", least=0.0)
    reference: str = setting("ais", "models with global latents: the reference posterior each guide's moments are "
                                    "compared with: ais (the evidence's AIS chains, weighted) | nuts (Pyro's NUTS) | "
                                    "none", choices=("ais", "nuts", "none"), role="evaluation")
    nuts_chains: int = setting(2, "NUTS chains of --reference nuts, run one after another", least=1, role="evaluation")
    nuts_warmup: int = setting(500, "NUTS warm-up steps per chain", least=1, role="evaluation")
    nuts_samples: int = setting(500, "NUTS samples kept per chain", least=2, role="evaluation")
    mode: str = setting("joint", "joint (train model and guide together) | fixed-model (train the model once with "
                                 "--reference-guide, then fit every guide to that same model)",
                                 choices=("joint", "fixed-model"))
    reference_guide: str = setting("diag", "the guide the model is trained with in --mode fixed-model")
    eval_every: int = setting(0, "steps between evaluations during training (0: ten evaluations per run)", least=0)
    curve_points: int = setting(64, "data points per split used by the evaluations during training", least=1)
    snr_draws: int = setting(16, "gradient draws M on one fixed training minibatch for the signal-to-noise ratio of "
                                 "the encoder's and decoder's gradients, measured at every evaluation during training "
                                 "and at the end (0: off)", least=0)
    checkpoint_every: int = setting(500, "steps between checkpoints (0: only at the end)", least=0, role="control")
    figures: bool = setting(True, "draw PNG figures into the output directory", role="control")
    on_nan: str = setting("stop", "stop | skip: on a NaN/inf loss or parameter, stop the command, or mark the run "
                                  "failed and go on", role="control", choices=("stop", "skip"))
    resume: bool = setting(False, "continue the runs saved in --out (after an interruption) instead of refusing to "
                                  "overwrite them", role="control")
    jobs: int = setting(0, "runs of a sweep trained at once, each in a worker process with torch's threads shared out; "
                           "0: one per core, at most one per run (compare)", short="-j", least=0, role="control")
    backend: str = setting("local", "local (this machine: one run at a time, or --jobs processes) | ray (Ray tasks on "
                                    "the cluster at --ray-address; --out must be shared by every node)",
                                    role="control", choices=("local", "ray"))
    ray_address: str | None = setting(None, "the Ray cluster of --backend ray, e.g. auto or HOST:6379 (default: "
                                            "$RAY_ADDRESS, else a Ray started for this command)", role="control")
    cpus_per_run: int | None = setting(None, "CPUs each run asks for and torch threads it uses (default: all cores one "
                                             "run at a time, cores shared among --jobs, 1 per Ray task)",
                                             positive=True, role="control")
    gpus_per_run: float = setting(0.0, "GPUs each Ray task asks for (fractions share a GPU); use with --device cuda",
                                       least=0, role="control")
    debug: bool = setting(False, "print the whole traceback of a run whose model or guide program raised (it is "
                                        "always kept in the run's train.log)", role="control")
    out: str = setting("results", "output directory (a run directory for train)", short="-o", role="control")
    simulations: int = setting(100, "elbogap calibrate: data sets simulated from the prior predictive, each guide "
                                    "fitted to each", least=2, role="control")
    calibration_draws: int = setting(1000, "elbogap calibrate: draws of each fitted q that rank the true latents",
                                     least=10, role="control")
    stacked_fits: str = setting("auto", "train a guide's fits as one vectorized program where the program allows "
                                        "(auto): its seeds in compare (Pyro's autoguides on a model with global "
                                        "latents; elbogap's models with their amortized families), its simulations "
                                        "in calibrate; or one at a time (off)", choices=("auto", "off"),
                                role="control")
    calibration_gaps: bool = setting(False, "elbogap calibrate: log p(D) of every simulated data set (AIS from a "
                                            "fitted reference, sandwiched by BDMC's reverse chains from its true "
                                            "latents) and each fit's KL gap on it", role="control")

    def validate(self) -> "Config":
        """Raise :class:`UsageError` naming the first setting out of range."""
        for declared in fields(self):
            name, value, meta = declared.name, getattr(self, declared.name), declared.metadata
            if value is None:
                continue
            if meta["least"] is not None and value < meta["least"]:
                raise UsageError(f"--{flag(name)} must be at least {meta['least']}, got {value}")
            if meta["positive"] and not value > 0:
                raise UsageError(f"--{flag(name)} must be positive, got {value}")
            if meta["choices"] is not None and value not in meta["choices"]:
                raise UsageError(f"unknown --{flag(name)} {value!r}; choose one of {', '.join(meta['choices'])}")
        check_gradient(self.objective, self.gradient)
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay is the factor the learning rate ends at, in (0, 1]; got {self.lr_decay}")
        if any(width < 1 for width in self.hidden_dims):
            raise UsageError(f"--hidden-dims must be positive widths, got {self.hidden_dims}")
        if self.likelihood is not None and is_user_model(self.model):
            raise UsageError(f"--likelihood sets the likelihood of elbogap's own models (vae, linear); your program "
                             f"{self.model} states its own: drop --likelihood")
        if not self.guides:
            raise UsageError("--guides is empty; name at least one guide, e.g. --guides diag,iaf")
        if not self.seeds:
            raise UsageError("--seeds is empty; give at least one seed, e.g. --seeds 0")
        if any(seed < 0 for seed in self.seeds):
            raise UsageError(f"--seeds are non-negative integers, got {min(self.seeds)}; e.g. --seeds 0,1")
        if len(set(self.guides)) != len(self.guides) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError("--guides and --seeds must not repeat an entry")
        if self.snr_draws == 1:
            raise UsageError("--snr-draws 1 gives no standard deviation; use 0 (off) or at least 2, e.g. 16")
        if not 0 <= self.holdout < 1:
            raise UsageError(f"--holdout is the share of rows held out, in [0, 1); got {self.holdout}")
        if not 0 < self.ais_target_accept < 1:
            raise UsageError(f"--ais-target-accept is an acceptance rate in (0, 1), got {self.ais_target_accept}")
        resolve_device(self.device)
        return self

    def steps_per_epoch(self, num_data: int) -> int:
        return math.ceil(num_data / min(self.batch_size, num_data))

    def total_steps(self, num_data: int) -> int:
        """``steps`` (the cap of ``--schedule converge``), or ``epochs`` worth of minibatches when epochs are given.

        Unset settings take the kind of model's defaults (:func:`~elbogap.factory.for_data`) before training."""
        if self.epochs is None:
            if self.steps is None:
                raise ValueError("steps is unset: resolve the configuration for its data (elbogap.factory.for_data)")
            return self.steps
        return max(1, round(self.epochs * self.steps_per_epoch(num_data)))

    def for_kind(self, defaults: dict) -> "Config":
        """The configuration with its unset kind-dependent settings (None, or ``schedule="auto"``) from ``defaults``."""
        changes = {name: value for name, value in defaults.items()
                   if getattr(self, name) is None or getattr(self, name) == "auto"}
        return self.replace(**changes) if changes else self

    def to_dict(self) -> dict:
        return asdict(self)

    def ais_settings(self) -> AISSettings:
        """The AIS settings these flags describe."""
        return AISSettings(steps=self.ais_steps, chains=self.ais_chains, leapfrog_steps=self.leapfrog_steps,
                           init=self.ais_init, target_accept=self.ais_target_accept)

    def evidence_settings(self) -> EvidenceSettings:
        """The settings of log p(D) for models with global latents (and of their BDMC's AIS)."""
        return EvidenceSettings(start=self.evidence_start, chains=self.evidence_chains, max_steps=self.evidence_steps,
                                target_stderr=self.evidence_stderr, target_accept=self.ais_target_accept)

    def replace(self, **changes) -> "Config":
        return Config(**{**self.to_dict(), **changes})


FIELDS = {f.name: f for f in fields(Config)}

#: settings of the evaluation after training: a resumed run re-evaluates (training kept) when one changed.
EVALUATION = tuple(name for name, f in FIELDS.items() if f.metadata["role"] == "evaluation")

#: settings that do not change what training computes: a resumed run may change them.
RUN_CONTROL = tuple(name for name, f in FIELDS.items() if f.metadata["role"] != "result")


def evaluation_changes(saved: dict, current: dict) -> list[str]:
    """The evaluation settings in which a finished run's saved configuration differs from ``current``."""
    defaults = Config().to_dict()
    return [name for name in EVALUATION if saved.get(name, defaults[name]) != current[name]]


#: settings a configuration may leave to the kind of model (None, or "auto"), resolved before training
KIND_SETTINGS = ("lr", "steps", "schedule", "convergence_tol", "particles")


def differences(saved: dict, current: dict) -> list[str]:
    """Names of the settings that make two configurations compute different things.

    A setting the saved configuration lacks (it predates the setting) had its default. A kind-dependent setting
    left unset in ``current`` takes what the saved run resolved it to (the same kind resolves it the same way).
    """
    defaults = Config().to_dict()
    return sorted(k for k in current if k not in RUN_CONTROL and saved.get(k, defaults.get(k)) != current[k]
                  and not (k in KIND_SETTINGS and current[k] in (None, "auto")))


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``latent_dim`` -> ``latent-dim``."""
    return name.replace("_", "-")




def read_study(path: str | Path) -> dict:
    """The settings of a TOML study file, checked against the known keys."""
    path = Path(path)
    try:
        settings = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"study file {path} does not exist; check the path given to --config") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read study file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        text = str(error)
        where = ("fix the line it names" if " line " in text else "close every [ and \" it opens"
                 if text.startswith(("Unclosed", "Unterminated")) else "fix the file's last line")
        raise UsageError(f"study file {path} is not valid TOML: {error}; {where}") from None
    unknown = sorted(set(settings) - set(FIELDS) - {"config"})
    if unknown:
        raise UsageError(f"study file {path} has unknown key(s) {', '.join(unknown)}; "
                         f"known keys are the long flag names with underscores, e.g. latent_dim")
    return settings


#: a command's own setting where a study file sets another command's: the hint its refusal gives
COUNTERPARTS = {"seed": "seeds", "guide": "guides"}


def resolve(overrides: dict, study: str | Path | None = None, base: Config | None = None,
            command: tuple[str, set] | None = None) -> Config:
    """Defaults (or ``base``) <- the study file <- ``overrides`` (flags that were given). ``command``: the command's
    name and the settings it takes; a study file that sets another setting away from its default is refused, not
    ignored, unless it is a saved config.toml (which holds every setting, ``seed`` and ``seeds`` among them, as the
    command that wrote it resolved them)."""
    settings = (base or Config()).to_dict()
    from_file = read_study(study) if study is not None else {}
    saved = all(key in from_file and pair in from_file for key, pair in COUNTERPARTS.items())  # a config.toml
    if command is not None and not saved:
        name, takes = command
        defaults = Config().to_dict()
        for key, value in from_file.items():
            if key in FIELDS and key not in takes and value != defaults[key]:
                fix = (f"elbogap {name} takes {COUNTERPARTS[key]}, e.g. {COUNTERPARTS[key]} = {json.dumps([value])}"
                       if COUNTERPARTS.get(key) in takes else f"remove it (see 'elbogap {name} --help')")
                raise UsageError(f"{key} = {json.dumps(value)} in study file {study} is not a setting of "
                                 f"'elbogap {name}'; {fix}")
    settings.update(from_file)
    settings.update(overrides)
    try:
        config = Config(**settings)
    except TypeError as error:
        raise UsageError(f"bad setting: {error}") from None
    return coerce(config, {name: study for name in from_file if name not in overrides}).validate()


KINDS = {  # what each kind of setting accepts, and how an error names it
    "list[int]": (lambda v: isinstance(v, list) and all(type(i) is int for i in v), "a list of integers"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of names"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: type(v) is int, "an integer"),
    "float": (lambda v: type(v) in (int, float), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
}


def kind_of(name: str) -> str:
    text = str(FIELDS[name].type)
    return next(kind for kind in KINDS if kind in text)


def coerce(config: Config, files: dict | None = None) -> Config:
    """Check the types of settings that came from a study file (TOML has its own types); ``files``: the study file
    each setting was read from, which the error names with a line of the type it wants."""
    for name in FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        accepts, description = KINDS[kind_of(name)]
        if not accepts(value):
            if name in (files or {}):
                default = Config().to_dict()[name]
                example = f", e.g. {name} = {json.dumps(default)}" if default is not None else ""
                raise UsageError(f"{name} in study file {files[name]} must be {description}{example}, got {value!r}")
            raise UsageError(f"{name} must be {description}, got {value!r}")
        if kind_of(name) == "float":
            setattr(config, name, float(value))
    return config


def to_toml(config: Config, command: str = "compare") -> str:
    """The resolved configuration as a study file that reproduces the run (of ``elbogap COMMAND``)."""
    lines = [f"# resolved configuration; rerun with: elbogap {command} --config config.toml"]
    for name, value in config.to_dict().items():
        if value is not None:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
