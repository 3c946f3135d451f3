"""Small network builders shared by decoders and encoders."""

from collections.abc import Sequence

from torch import nn

from elbogap.errors import UsageError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def mlp(input_dim: int, hidden_dims: Sequence[int], activation: str = "softplus") -> nn.Sequential:
    """A stack of ``Linear -> activation`` layers; with no hidden dims it is the identity.

    The output width is ``hidden_dims[-1]`` (or ``input_dim`` when ``hidden_dims`` is empty);
    callers put their own linear heads on top.
    """
    if activation not in ACTIVATIONS:
        raise UsageError(
            f"unknown activation {activation!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        width = hidden
    return nn.Sequential(*layers)


def output_width(input_dim: int, hidden_dims: Sequence[int]) -> int:
    """Width of the features that :func:`mlp` produces."""
    return hidden_dims[-1] if len(hidden_dims) else input_dim
