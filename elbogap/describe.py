"""The model that ran, as a run records it (``run["model"]``) and as the report and ``train.log`` say it.

A user's program is described from its trace: its latent sites and their sizes, its observed
sites and how many numbers its parameters hold; ``--latent-dim`` and ``--hidden-dims`` do not
shape it, so they are not quoted. A built-in model is described by the settings that built it.
"""

import math

from elbogap.config import Config
from elbogap.sites import latent_sites, observed_sites
from elbogap.user_model import is_user_model


def describe_model(model, config: Config) -> dict:
    """``spec``, ``program`` (a user's program or not), ``sites`` and ``parameters`` (the numbers they hold).

    ``sites`` has ``latent`` (each latent site's shape: per data point, or the whole value's where
    ``per_point`` is false, as in a model with global latents), ``global`` (the global ones),
    ``latent_dim`` and ``observed``. The built-in VAE adds ``hidden_dims``, ``activation`` and
    ``likelihood``.
    """
    record = {
        "spec": config.model,
        "program": is_user_model(config.model),
        "sites": {"latent": {name: list(shape) for name, shape in latent_sites(model).items()},
                  "per_point": not getattr(model, "global_sites", None),
                  "global": list(getattr(model, "global_sites", [])),
                  "latent_dim": model.latent_dim, "observed": observed_sites(model)},
        "parameters": sum(value.numel() for value in model.state_dict().values()),
    }
    if config.model == "vae":
        record.update(hidden_dims=list(config.hidden_dims), activation=config.activation,
                      likelihood=getattr(model, "likelihood_name", None))
    return record


def model_text(record: dict) -> str:
    """One sentence: what model ran, its latent sites and their sizes, and its parameters."""
    sites = record["sites"]

    def size(name, shape):
        if sites["per_point"]:
            return f"{name} ({math.prod(shape)} per data point)"
        return f"{name} ({'x'.join(map(str, shape)) or 'scalar'}{', global' if name in sites['global'] else ''})"

    latent = ", ".join(size(name, shape) for name, shape in sites["latent"].items())
    plural = "s" if len(sites["latent"]) > 1 else ""
    text = (f"your program {record['spec']}" if record["program"] else f"{record['spec']}") + \
        f": latent site{plural} {latent}; observed {', '.join(sites['observed'])}"
    if "hidden_dims" in record:
        widths = ", ".join(map(str, record["hidden_dims"])) or "none"
        text += f"; decoder hidden widths {widths} ({record['activation']}), {record['likelihood']} likelihood"
    return text + f"; {record['parameters']:,} parameters"
