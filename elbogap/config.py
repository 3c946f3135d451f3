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
from elbogap.inference.ais import INITS as AIS_INITS
from elbogap.inference.ais import AISSettings
from elbogap.inference.log_px import SETTINGS as LOG_PX_SETTINGS


@dataclass
class Config:
    """Every setting of a run or a sweep; the command-line flags are these names with dashes.

    ``likelihood=None`` picks Bernoulli for binary data and Gaussian otherwise;
    ``binarize=None`` thresholds image data at 0.5 and leaves other data as it is;
    ``epochs``, when set, overrides ``steps``.
    """

    data: str = "digits"
    data_dir: str | None = None
    binarize: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    data_seed: int = 0
    test_fraction: float = 0.2
    model: str = "vae"
    likelihood: str | None = None
    latent_dim: int = 2
    hidden_dims: list[int] = field(default_factory=lambda: [128])
    activation: str = "softplus"
    guide: str = "diag"
    seed: int = 0
    guides: list[str] = field(default_factory=lambda: ["diag", "full", "iaf", "planar"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    steps: int = 3000
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 3e-3
    lr_decay: float = 0.1
    kl_warmup: float = 0.0
    objective: str = "elbo"
    particles: int = 1
    jit: bool = True
    device: str = "cpu"
    flow_depth: int = 2
    mixture_size: int = 3
    rank: int = 1
    eval_samples: int = 256
    iw_samples: int = 1000
    quadrature_points: int = 32
    log_px: str = "auto"
    ais_points: int = 100
    ais_steps: int = 500
    ais_chains: int = 16
    leapfrog_steps: int = 10
    ais_init: str = "prior"
    ais_target_accept: float = 0.65
    bdmc: int = 0
    gap_points: int = 64
    dynamics_points: int = 0
    mode: str = "joint"
    reference_guide: str = "diag"
    eval_every: int = 0
    curve_points: int = 256
    checkpoint_every: int = 500
    figures: bool = True
    on_nan: str = "stop"
    resume: bool = False
    jobs: int = 1
    backend: str = "local"
    ray_address: str | None = None
    cpus_per_run: int | None = None
    gpus_per_run: float = 0.0
    out: str = "results"

    def validate(self) -> "Config":
        """Raise :class:`UsageError` naming the first setting out of range."""
        least = {"latent_dim": 1, "batch_size": 1, "particles": 1, "flow_depth": 1, "mixture_size": 1,
                 "rank": 1, "eval_samples": 1, "iw_samples": 1, "quadrature_points": 4, "curve_points": 1,
                 "steps": 0, "eval_every": 0, "checkpoint_every": 0, "kl_warmup": 0, "gap_points": 0,
                 "dynamics_points": 0, "jobs": 1, "ais_points": 0, "ais_steps": 1, "ais_chains": 1,
                 "leapfrog_steps": 1, "bdmc": 0, "gpus_per_run": 0}
        for name, low in least.items():
            if getattr(self, name) < low:
                raise UsageError(f"--{flag(name)} must be at least {low}, got {getattr(self, name)}")
        for name in ("train_size", "test_size", "epochs", "cpus_per_run"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{flag(name)} must be positive, got {value}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise UsageError(f"--lr-decay is the factor the learning rate ends at, in (0, 1]; got {self.lr_decay}")
        if any(width < 1 for width in self.hidden_dims):
            raise UsageError(f"--hidden-dims must be positive widths, got {self.hidden_dims}")
        if not self.guides:
            raise UsageError("--guides is empty; name at least one guide, e.g. --guides diag,iaf")
        if not self.seeds:
            raise UsageError("--seeds is empty; give at least one seed, e.g. --seeds 0")
        if len(set(self.guides)) != len(self.guides) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError("--guides and --seeds must not repeat an entry")
        if self.mode not in ("joint", "fixed-model"):
            raise UsageError(f"unknown --mode {self.mode!r}; choose joint or fixed-model")
        if self.backend not in ("local", "ray"):
            raise UsageError(f"unknown --backend {self.backend!r}; choose local (this machine, --jobs processes) "
                             "or ray (a Ray cluster, --ray-address)")
        if self.on_nan not in ("stop", "skip"):
            raise UsageError(f"unknown --on-nan {self.on_nan!r}; choose stop or skip")
        if self.log_px not in LOG_PX_SETTINGS:
            raise UsageError(f"unknown --log-px {self.log_px!r}; choose one of {', '.join(LOG_PX_SETTINGS)}")
        if self.ais_init not in AIS_INITS:
            raise UsageError(f"unknown --ais-init {self.ais_init!r}; choose prior (guide-independent) or q")
        if not 0 < self.ais_target_accept < 1:
            raise UsageError(f"--ais-target-accept is an acceptance rate in (0, 1), got {self.ais_target_accept}")
        resolve_device(self.device)
        if self.binarize not in (None, "threshold", "static", "dynamic", "none"):
            raise UsageError(f"unknown --binarize {self.binarize!r}; choose threshold, static, dynamic or none")
        return self

    def steps_per_epoch(self, num_data: int) -> int:
        return math.ceil(num_data / min(self.batch_size, num_data))

    def total_steps(self, num_data: int) -> int:
        """``steps``, or ``epochs`` worth of minibatches when epochs are given."""
        if self.epochs is None:
            return self.steps
        return max(1, round(self.epochs * self.steps_per_epoch(num_data)))

    def to_dict(self) -> dict:
        return asdict(self)

    def ais_settings(self) -> AISSettings:
        """The AIS settings these flags describe."""
        return AISSettings(steps=self.ais_steps, chains=self.ais_chains, leapfrog_steps=self.leapfrog_steps,
                           init=self.ais_init, target_accept=self.ais_target_accept)

    def replace(self, **changes) -> "Config":
        return Config(**{**self.to_dict(), **changes})


#: settings of the evaluation after training: a resumed run re-evaluates (training kept) when one changed.
EVALUATION = ("eval_samples", "iw_samples", "quadrature_points", "gap_points", "log_px", "ais_points", "ais_steps",
              "ais_chains", "leapfrog_steps", "ais_init", "ais_target_accept", "bdmc")

#: settings that control how a command runs, not what training computes: a resumed run may change them.
RUN_CONTROL = ("out", "resume", "figures", "on_nan", *EVALUATION, "guides", "seeds", "guide", "seed",
               "checkpoint_every", "jobs", "backend", "ray_address", "cpus_per_run", "gpus_per_run")


def evaluation_changes(saved: dict, current: dict) -> list[str]:
    """The evaluation settings in which a finished run's saved configuration differs from ``current``."""
    defaults = Config().to_dict()
    return [name for name in EVALUATION if saved.get(name, defaults[name]) != current[name]]


def differences(saved: dict, current: dict) -> list[str]:
    """Names of the settings that make two configurations compute different things."""
    return sorted(k for k in current if k not in RUN_CONTROL and saved.get(k) != current[k])


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``latent_dim`` -> ``latent-dim``."""
    return name.replace("_", "-")


FIELDS = {f.name: f for f in fields(Config)}


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
        raise UsageError(f"study file {path} is not valid TOML: {error}; fix the line it names") from None
    unknown = sorted(set(settings) - set(FIELDS) - {"config"})
    if unknown:
        raise UsageError(f"study file {path} has unknown key(s) {', '.join(unknown)}; "
                         f"known keys are the long flag names with underscores, e.g. latent_dim")
    return settings


def resolve(overrides: dict, study: str | Path | None = None, base: Config | None = None) -> Config:
    """Defaults (or ``base``) <- the study file <- ``overrides`` (flags that were given)."""
    settings = (base or Config()).to_dict()
    if study is not None:
        settings.update(read_study(study))
    settings.update(overrides)
    try:
        config = Config(**settings)
    except TypeError as error:
        raise UsageError(f"bad setting: {error}") from None
    return coerce(config).validate()


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


def coerce(config: Config) -> Config:
    """Check the types of settings that came from a study file (TOML has its own types)."""
    for name in FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        accepts, description = KINDS[kind_of(name)]
        if not accepts(value):
            raise UsageError(f"{name} must be {description}, got {value!r}")
        if kind_of(name) == "float":
            setattr(config, name, float(value))
    return config


def to_toml(config: Config) -> str:
    """The resolved configuration as a study file that reproduces the run."""
    lines = ["# resolved configuration; rerun with: elbogap compare --config config.toml"]
    for name, value in config.to_dict().items():
        if value is not None:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
