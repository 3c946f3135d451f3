"""The exact posterior as a guide, for models that have one in closed form."""

from elbogap.errors import UsageError
from elbogap.guides.base import Guide
from elbogap.guides.guide import family


@family("exact")
class ExactPosterior(Guide):
    r""":math:`q(z \mid x) = p(z \mid x)`: the ELBO then equals :math:`\log p(x)` and the gap is zero.

    It has no parameters of its own; the model's parameters reach it through the closed-form
    posterior, so training with it is exact maximum likelihood.

    :param model: a model with ``has_exact_posterior`` (e.g. :class:`~elbogap.model.LinearGaussian`).
    """

    @classmethod
    def build(cls, model, num_data, settings):
        return cls(model)

    def __init__(self, model):
        if not getattr(model, "has_exact_posterior", False):
            raise UsageError("the exact guide needs a model with a closed-form posterior (linear)")
        super().__init__(model.latent_dim)
        # Kept out of the module tree so that the model's parameters are registered once.
        object.__setattr__(self, "source", model)

    def distribution(self, x, index=None):
        return self.source.posterior(x)
