"""How a traced site is scored: Pyro's scale and mask, and per point without a subsample's factor."""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from elbogap.sites import scored, scored_per_point


def guide(index):
    with pyro.plate("data", 240, subsample=index), poutine.scale(scale=0.5):
        pyro.sample("z", dist.Normal(torch.zeros(len(index)), 1.0).mask(torch.tensor([True] * (len(index) - 1)
                                                                                     + [False])))


def test_a_site_scored_per_point_keeps_the_programs_scale_and_mask_but_not_the_subsample_factor():
    """A guide with parameters per point runs in a plate of the split's full size: on 4 of 240 rows Pyro scales its
    sites by 60. Per point that factor goes; the program's own poutine.scale stays, and a masked entry counts 0."""
    site = poutine.trace(guide).get_trace(torch.tensor([3, 50, 99, 200])).nodes["z"]
    own = 0.5 * dist.Normal(0.0, 1.0).log_prob(site["value"]) * torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert torch.allclose(scored_per_point(site), own) and torch.allclose(scored(site), 60 * own)
    whole = poutine.trace(guide).get_trace(torch.arange(240)).nodes["z"]  # no subsample: nothing to take out
    assert torch.equal(scored_per_point(whole), scored(whole))
