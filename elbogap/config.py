"""One configuration for a study: what data, which model, which guides, how long, how evaluated."""

from dataclasses import asdict, dataclass, field, fields

from elbogap.errors import UsageError


@dataclass
class Config:
    """Every setting of a run or a sweep; the command-line flags are these names with dashes.

    ``likelihood=None`` picks Bernoulli for binary data and Gaussian otherwise.
    """

    data: str = "digits"
    data_seed: int = 0
    test_fraction: float = 0.2
    model: str = "vae"
    likelihood: str | None = None
    latent_dim: int = 2
    hidden_dims: list[int] = field(default_factory=lambda: [128])
    activation: str = "softplus"
    guides: list[str] = field(default_factory=lambda: ["diag", "full", "iaf", "planar"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3e-3
    objective: str = "elbo"
    particles: int = 1
    flow_depth: int = 2
    mixture_size: int = 3
    rank: int = 1
    eval_samples: int = 256
    iw_samples: int = 1000
    quadrature_points: int = 32
    out: str = "results"

    def validate(self) -> "Config":
        """Raise :class:`UsageError` naming the first setting out of range."""
        positive = {"latent_dim": 1, "batch_size": 1, "particles": 1, "flow_depth": 1,
                    "mixture_size": 1, "rank": 1, "eval_samples": 1, "iw_samples": 1,
                    "quadrature_points": 4}
        for name, least in positive.items():
            if getattr(self, name) < least:
                raise UsageError(f"--{flag(name)} must be at least {least}, got {getattr(self, name)}")
        if self.steps < 0:
            raise UsageError(f"--steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if any(width < 1 for width in self.hidden_dims):
            raise UsageError(f"--hidden-dims must be positive widths, got {self.hidden_dims}")
        if not self.guides:
            raise UsageError("--guides is empty; name at least one guide, e.g. --guides diag,iaf")
        if not self.seeds:
            raise UsageError("--seeds is empty; give at least one seed, e.g. --seeds 0")
        if len(set(self.guides)) != len(self.guides) or len(set(self.seeds)) != len(self.seeds):
            raise UsageError("--guides and --seeds must not repeat an entry")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``latent_dim`` -> ``latent-dim``."""
    return name.replace("_", "-")


FIELDS = {f.name: f for f in fields(Config)}
