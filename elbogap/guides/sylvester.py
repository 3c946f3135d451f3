"""A conditional Sylvester flow (Pyro ships only an unconditional one)."""

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn
from torch.distributions import Transform, constraints


def householder_product(vectors: torch.Tensor) -> torch.Tensor:
    """:math:`Q = \\prod_k (I - 2 v_k v_k^\\top / \\|v_k\\|^2)` for ``vectors`` of shape ``(..., K, D)``."""
    dim = vectors.shape[-1]
    q = torch.eye(dim, dtype=vectors.dtype, device=vectors.device).expand(
        vectors.shape[:-2] + (dim, dim)
    )
    for k in range(vectors.shape[-2]):
        v = vectors[..., k, :]
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        q = q - 2 * (q @ v.unsqueeze(-1)) @ v.unsqueeze(-2)
    return q


class ConditionedSylvester(Transform):
    r"""Sylvester map :math:`y = x + Q R \tanh(S Q^\top x + b)` with per-datapoint parameters.

    :math:`Q` is orthogonal and :math:`R, S` are upper triangular with
    :math:`R_{ii} S_{ii} > -1`, which makes the map invertible with
    :math:`\log|\det J| = \sum_i \log|1 + R_{ii} S_{ii} \tanh'(\cdot)_i|`. Like Pyro's
    :class:`~pyro.distributions.transforms.Sylvester`, the inverse has no closed form: only
    samples the transform produced (and cached) can be scored.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, q, r, s, b):
        super().__init__(cache_size=1)
        self.q, self.r, self.s, self.b = q, r, s, b
        self._cached_log_det = None

    def _call(self, x):
        qtx = (x.unsqueeze(-2) @ self.q).squeeze(-2)
        pre = (qtx.unsqueeze(-2) @ self.s.transpose(-1, -2)).squeeze(-2) + self.b
        act = torch.tanh(pre)
        y = x + (act.unsqueeze(-2) @ (self.q @ self.r).transpose(-1, -2)).squeeze(-2)
        diag = torch.diagonal(self.r, dim1=-2, dim2=-1) * torch.diagonal(self.s, dim1=-2, dim2=-1)
        self._cached_log_det = (1 + diag * (1 - act.pow(2))).abs().log().sum(-1)
        return y

    def _inverse(self, y):
        raise NotImplementedError("the Sylvester flow has no closed-form inverse")

    def log_abs_det_jacobian(self, x, y):
        return self._cached_log_det


class ConditionalSylvester(ConditionalTransformModule):
    r"""Sylvester flow whose :math:`Q, R, S, b` are outputs of a linear map of a context vector.

    The Householder variety of [1]: :math:`Q` is a product of ``count_householder``
    reflections, and the diagonals of :math:`R, S` pass through :math:`\tanh` so that
    :math:`R_{ii} S_{ii} > -1`. Pyro provides only the unconditional
    :class:`~pyro.distributions.transforms.Sylvester`, hence this class.

    :param int input_dim: dimension of :math:`z`.
    :param int context_dim: dimension of the context (the encoder's features).
    :param int count_householder: number of Householder reflections in :math:`Q`
        (default ``input_dim``).

    References:

    [1] Sylvester Normalizing Flows for Variational Inference, Rianne van den Berg,
        Leonard Hasenclever, Jakub M. Tomczak, Max Welling, arXiv:1803.05649
    """

    def __init__(self, input_dim: int, context_dim: int, count_householder: int | None = None):
        super().__init__()
        self.input_dim = input_dim
        self.count_householder = count_householder or input_dim
        sizes = [input_dim * input_dim, input_dim * input_dim, input_dim,
                 self.count_householder * input_dim]
        self.sizes = sizes
        self.hypernet = nn.Linear(context_dim, sum(sizes))
        nn.init.normal_(self.hypernet.weight, std=0.01)
        nn.init.zeros_(self.hypernet.bias)
        with torch.no_grad():  # distinct reflections at the start; Q stays orthogonal throughout
            self.hypernet.bias[-self.count_householder * input_dim:].normal_()
        self.register_buffer("upper", torch.triu(torch.ones(input_dim, input_dim), diagonal=1))

    def _triangular(self, raw):
        shape = raw.shape[:-1] + (self.input_dim, self.input_dim)
        raw = raw.reshape(shape)
        diag = torch.tanh(torch.diagonal(raw, dim1=-2, dim2=-1))
        return raw * self.upper + torch.diag_embed(diag)

    def condition(self, context) -> Transform:
        raw_r, raw_s, b, raw_v = self.hypernet(context).split(self.sizes, dim=-1)
        vectors = raw_v.reshape(raw_v.shape[:-1] + (self.count_householder, self.input_dim))
        return ConditionedSylvester(
            householder_product(vectors), self._triangular(raw_r), self._triangular(raw_s), b
        )
