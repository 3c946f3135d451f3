"""Named random streams: each seed is the documented derivation, and phases never share a stream."""

import random

import numpy as np
import pytest
import torch

from elbogap import streams
from elbogap.streams import STREAMS, generator, seed_for, seeded

#: today's seeds, as the code derived them before the streams were named: a run seed s, a data seed d
DERIVATIONS = {
    "training": lambda s: s,
    "evaluation": lambda s: s + 10_000,
    "evaluation_test": lambda s: s + 15_000,
    "log_px_train": lambda s: s + 16_000,
    "log_px_test": lambda s: s + 17_000,
    "bdmc": lambda s: s + 20_000,
    "reference": lambda s: s + 30_000,
    "evidence": lambda s: s + 40_000,
    "held_out_evidence": lambda s: s + 45_000,
    "convergence_checks": lambda s: s + 70_000,
    "figure_draws": lambda s: s + 80_000,
    "subsets": lambda d: d + 7,
    "holdout": lambda d: d + 13,
    "train_subset": lambda d: d + 11,
    "common_draws": lambda s: s,
    "notebook_evaluation": lambda s: s,
    "notebook_ais_points": lambda s: s,
    "snr_batch": lambda s: s + 50_000,
    "mean_field_check": lambda s: s + 700_000,
    "warm_start": lambda s: s + 800_000,
    "curvature_start": lambda s: s + 850_000,
    "scale_bounds": lambda s: s + 900_000,
    "second_start": lambda s: s + 950_000,
    "start_choice": lambda s: s + 970_000,
}


@pytest.mark.parametrize("seed", [0, 3, 12345])
@pytest.mark.parametrize("name", sorted(DERIVATIONS))
def test_each_stream_seed_is_its_documented_derivation(name, seed):
    assert seed_for(name, seed) == DERIVATIONS[name](seed)


@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_the_epoch_order_is_reseeded_by_epoch(epoch):
    assert seed_for("epoch_order", 5, epoch) == 5 * 1_000_003 + epoch


def test_each_simulation_of_a_calibration_has_its_own_seed():
    assert seed_for("simulation", 5, 3) == 5 * 1_000_003 + 90_000 + 3


def test_a_stacked_fits_three_draws_never_meet_another_seeds():
    """Training (counter 0), checks (1) and final draws (2) of the fit of seed 5: 3 * 5 + 100000 + counter."""
    assert [seed_for("stacked_fit", 5, counter) for counter in range(3)] == [100_015, 100_016, 100_017]
    assert seed_for("stacked_fit", 6, 0) == seed_for("stacked_fit", 5, 2) + 1


def test_the_snr_draws_are_reseeded_by_step():
    assert seed_for("snr_draws", 5, 200) == 5 * 1_000_003 + 60_000 + 200


def test_a_stacked_refit_draws_per_split_from_its_own_seed():
    assert [seed_for("stacked_refit", 5, split) for split in (0, 1)] == [600_010, 600_011]


def test_a_stacked_run_is_handed_over_at_each_step_from_its_own_seed():
    assert seed_for("stacked_run", 5, 200) == 5 * 1_000_003 + 500_000 + 200


def test_every_stream_is_in_the_table_of_derivations():
    assert set(STREAMS) == {*DERIVATIONS, "epoch_order", "snr_draws", "simulation", "stacked_fit", "stacked_run",
                            "stacked_refit"}


@pytest.mark.parametrize(("source", "rng"), [("run", "global"), ("data", "generator")])
def test_phases_that_draw_from_the_same_generators_never_share_a_seed(source, rng):
    names = [name for name, stream in STREAMS.items() if (stream.source, stream.rng) == (source, rng)]
    assert len(names) > 1
    for seed in (0, 1, 99):
        assert len({seed_for(name, seed) for name in names}) == len(names)
        drawn = {tuple(torch.randint(2**31, (4,), generator=generator(name, seed)).tolist()) for name in names}
        assert len(drawn) == len(names)


def test_a_generator_leaves_the_global_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    torch.rand(3, generator=generator("subsets", 0))
    assert torch.equal(torch.rand(3), expected)


def test_seeded_sets_the_global_generators_a_phase_draws_from():
    seeded("evaluation", 2)
    drawn = torch.rand(2), random.random(), np.random.rand()
    torch.manual_seed(10_002), random.seed(10_002), np.random.seed(10_002)
    assert (torch.equal(drawn[0], torch.rand(2)), drawn[1], drawn[2]) == (True, random.random(), np.random.rand())
    seeded("common_draws", 4)  # torch's generator alone
    drawn = torch.rand(2)
    torch.manual_seed(4)
    assert torch.equal(drawn, torch.rand(2))


def test_a_private_stream_cannot_seed_the_global_generators():
    with pytest.raises(ValueError, match="private generator"):
        streams.seeded("subsets", 0)


def test_a_large_seed_seeds_every_stream_within_numpys_range():
    """Seeds are scaled and offset per stream; the simulations' stream (a scale of 1,000,003) passed NumPy's largest
    seed from run seed 4,295 on, and the run failed with a traceback. Each stream's seed is now taken modulo 2**32,
    the same for the seeds in use before."""
    from elbogap.streams import STREAMS, seed_for, seeded

    assert seed_for("simulation", 0, 7) == STREAMS["simulation"].offset + 7
    for name, stream in STREAMS.items():
        assert 0 <= seed_for(name, 123_456_789, 99) < 2**32
        if stream.rng != "generator":
            seeded(name, 123_456_789)
