"""BernoulliPixels is Bernoulli(logits).to_event(1) with a cheaper log density."""

import pyro.distributions as dist
import pytest
import torch

from elbogap.model.bernoulli import BernoulliPixels


@pytest.mark.parametrize("binary", [True, False])
def test_log_prob_equals_torchs_bernoulli_with_broadcasting(binary):
    logits = torch.randn(7, 5, 30, dtype=torch.float64) * 4
    x = torch.rand(5, 30, dtype=torch.float64)
    x = x.round() if binary else x  # fractional targets (grey pixels) keep the cross-entropy form
    ours = BernoulliPixels(logits).log_prob(x)
    assert ours.shape == (7, 5)
    torch.testing.assert_close(ours, dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(x))


def test_shapes_samples_and_expand_follow_the_independent_bernoulli():
    logits = torch.tensor([[-30.0, 0.0, 30.0]])
    pixels = BernoulliPixels(logits)
    assert pixels.batch_shape == (1,) and pixels.event_shape == (3,)
    draws = pixels.sample((2000,))
    assert draws[:, 0, 0].sum() == 0 and draws[:, 0, 2].sum() == 2000
    assert abs(draws[:, 0, 1].mean() - 0.5) < 4 * 0.5 / 2000**0.5
    wide = pixels.expand((4, 1))
    assert isinstance(wide, BernoulliPixels) and wide.batch_shape == (4, 1)
    torch.testing.assert_close(wide.log_prob(torch.ones(3)), pixels.log_prob(torch.ones(3)).expand(4, 1))
