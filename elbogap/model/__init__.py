"""Generative models :math:`p(z)\\,p(x \\mid z)`, each a Pyro program ``model(x)``."""

from elbogap.errors import UsageError
from elbogap.model.base import LatentModel
from elbogap.model.linear import LinearGaussian
from elbogap.model.vae import VAE

MODELS = {"vae": VAE, "linear": LinearGaussian}

__all__ = ["MODELS", "LatentModel", "LinearGaussian", "VAE", "build_model"]


def build_model(name, data_dim, latent_dim, hidden_dims=(128,), activation="softplus",
                likelihood="bernoulli") -> LatentModel:
    """Build a model by its short name (``"vae"`` or ``"linear"``)."""
    if name == "vae":
        return VAE(data_dim, latent_dim, hidden_dims, activation, likelihood)
    if name == "linear":
        if likelihood != "gaussian":
            raise UsageError("the linear model has a Gaussian likelihood; use --likelihood gaussian")
        return LinearGaussian(data_dim, latent_dim)
    if str(name).endswith(".py"):
        raise UsageError(f"the model {name!r} names a file but not the program in it; write {name}:NAME, NAME the "
                         "model function (or class) defined there")
    raise UsageError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} or name your own program as "
                     "path/to/file.py:name")
