r"""Named random streams: each phase of a run draws its randomness from its own seed.

Every stream's seed is derived from the run's ``--seed`` or from ``--data-seed`` in one place,
the table :data:`STREAMS`:

.. math::

    \mathrm{seed}_\text{stream} = \mathrm{scale} \cdot s + \mathrm{offset} + \mathrm{counter},

where :math:`s` is the seed the stream is derived from and the counter numbers the draws of a
stream that is reseeded again and again (the epochs of training). Code asks for a stream by name:
:func:`generator` for a private ``torch.Generator``, :func:`seeded` to seed the global random
number generators a phase draws from (Pyro programs sample from them).
"""

from dataclasses import dataclass

import pyro
import torch


@dataclass(frozen=True)
class Stream:
    """One named source of randomness.

    :param str name: how code asks for it.
    :param str source: the seed it is derived from: ``"run"`` (``--seed``), ``"data"``
        (``--data-seed``), ``"drawn"`` (a seed drawn from the stream in use) or ``"call"`` (the
        ``seed`` of a notebook call).
    :param int offset: added to the seed.
    :param str rng: what it seeds: ``"global"`` (torch's, Python's and NumPy's global generators, as
        ``pyro.set_rng_seed`` does), ``"torch"`` (torch's global generator alone) or
        ``"generator"`` (a private ``torch.Generator`` on the CPU).
    :param str purpose: what is drawn from it.
    :param int scale: multiplies the seed, so streams reseeded by a counter never meet.
    """

    name: str
    source: str
    offset: int
    rng: str
    purpose: str
    scale: int = 1

    def seed(self, seed: int, counter: int = 0) -> int:
        """``scale * seed + offset + counter``, modulo :math:`2^{32}` (NumPy's generator, which ``"global"`` seeds,
        takes no larger seed: a study of seed 5,000 failed its simulations there); the same for every seed in use
        before."""
        return (self.scale * seed + self.offset + counter) % 2**32


STREAMS: dict[str, Stream] = {stream.name: stream for stream in (
    Stream("training", "run", 0, "global", "initial parameters of model and guide, and SVI's draws"),
    Stream("epoch_order", "run", 0, "generator", "each epoch's order of the training rows and its dynamic "
           "binarization; the counter is the epoch", scale=1_000_003),
    Stream("evaluation", "run", 10_000, "global", "the draws of the evaluation after training (the training split's)"),
    Stream("evaluation_test", "run", 15_000, "global", "the draws of the test split's evaluation after training, "
           "seeded afresh: they do not depend on how many draws the training split's q* refit took"),
    Stream("log_px_train", "run", 16_000, "torch", "the draws of a guide-independent estimate of log p(x) (AIS) on "
           "the training split, seeded afresh after q's draws (a mixture or a per-datapoint guide draws more of those, "
           "and every guide of a seed must get the same estimate) in a fork of torch's generator, which the draws "
           "after it go on from as if it had drawn none"),
    Stream("log_px_test", "run", 17_000, "torch", "the same on the test split"),
    Stream("bdmc", "run", 20_000, "global", "the data simulated from the model and the chains of BDMC"),
    Stream("evidence", "run", 40_000, "global", "the SMC particles, the reference fit and the AIS chains of log p(D) "
           "of a model with global latents"),
    Stream("held_out_evidence", "run", 45_000, "global", "the same for log p(D) of the data set with its held-out rows "
           "(--holdout), independent of D's"),
    Stream("reference", "run", 30_000, "global", "the NUTS chains of the reference posterior (chain c adds c)"),
    Stream("holdout", "data", 13, "generator", "the rows --holdout keeps out of a global model's data set"),
    Stream("subsets", "data", 7, "generator", "the gap points and the AIS points of a split (one permutation)"),
    Stream("train_subset", "data", 11, "generator", "the training points evaluated after training"),
    Stream("common_draws", "drawn", 0, "torch", "the base draws shared by the ELBOs of q and of q* in a gap "
           "decomposition, so the noise of their difference cancels"),
    Stream("snr_batch", "run", 50_000, "generator", "the fixed minibatch on which the training gradient's "
           "signal-to-noise is measured"),
    Stream("snr_draws", "run", 60_000, "torch", "the gradient draws of a signal-to-noise measurement; the counter is "
           "the training step", scale=1_000_003),
    Stream("convergence_checks", "run", 70_000, "torch", "the draws of q every ELBO check of --schedule converge "
           "scores, the same at every check of every run (common random numbers)"),
    Stream("figure_draws", "run", 80_000, "global", "the draws of what a per-point run's figures show (q's draws, "
           "reconstructions, prior samples), saved after its evaluation"),
    Stream("simulation", "run", 90_000, "global", "elbogap calibrate: the latents and data set of one simulation "
           "from the prior predictive, and the seed its fits train from; the counter is the simulation",
           scale=1_000_003),
    Stream("stacked_fit", "run", 100_000, "generator", "one fit trained at once with others (stacked fits): its SVI "
           "draws (counter 0), the fixed draws its ELBO checks score (1) and its draws after training (2)", scale=3),
    Stream("stacked_run", "run", 500_000, "torch", "a run whose seed trained at once with others: torch's generator "
           "where the stack hands the run over (its curve evaluations, and the state its checkpoint keeps for the run "
           "to go on alone); the counter is the step", scale=1_000_003),
    Stream("stacked_refit", "run", 600_000, "generator", "q* of a run whose seed trained at once with others, refit "
           "at once with theirs: its draws (counter 0 for the training split's gap points, 1 for the test split's)",
           scale=2),
    Stream("mean_field_check", "run", 700_000, "global", "the mean-field fit (AutoNormal) of a model with global "
           "latents, once per seed: the families that contain it start from it, and their ELBO is held to it"),
    Stream("warm_start", "run", 800_000, "generator", "the low-rank factor a low-rank Gaussian starts with where it "
           "starts from the seed's mean-field fit"),
    Stream("curvature_start", "run", 850_000, "generator", "the draws at which a full-rank Gaussian's start from the "
           "seed's mean-field fit averages the curvature, and those that score it against the mean field"),
    Stream("scale_bounds", "run", 900_000, "generator", "the base draws at which a trained IAF's scales are read "
           "against Pyro's bounds on them"),
    Stream("second_start", "run", 950_000, "global", "the second fit of a family trained from two starts (its start "
           "at the seed's mean-field fit, and its SVI draws)"),
    Stream("start_choice", "run", 970_000, "global", "the draws that score both fits of a family trained from two "
           "starts, to keep the better (not the evaluation's, so the reported ELBO is not the larger of two draws)"),
    Stream("notebook_evaluation", "call", 0, "torch", "the draws of elbogap.evaluate"),
    Stream("notebook_ais_points", "call", 0, "generator", "the points of elbogap.evaluate that get AIS"),
)}


def seed_for(name: str, seed: int, counter: int = 0) -> int:
    """The seed of stream ``name`` for the run (or data) seed ``seed``; see :data:`STREAMS`."""
    return STREAMS[name].seed(seed, counter)


def generator(name: str, seed: int, counter: int = 0) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` of stream ``name``, so its draws leave every other stream alone."""
    return torch.Generator().manual_seed(seed_for(name, seed, counter))


def seeded(name: str, seed: int) -> None:
    """Seed the global generators that phase ``name`` draws from (Pyro programs sample from torch's)."""
    stream = STREAMS[name]
    if stream.rng == "global":
        pyro.set_rng_seed(stream.seed(seed))
    elif stream.rng == "torch":
        torch.manual_seed(stream.seed(seed))
    else:
        raise ValueError(f"stream {name!r} is a private generator; ask for it with generator({name!r}, seed)")
