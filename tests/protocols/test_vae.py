"""The per-datapoint protocol's promises: refits during training leave training alone; the training split is
evaluated on a seeded subset."""

import numpy as np
import pyro
import torch

from elbogap.config import Config
from elbogap.factory import build, load_dataset, make_trainer
from elbogap.points import CARRIED
from elbogap.protocols import PROTOCOLS, protocol_for
from elbogap.protocols.vae import evaluate_splits, evaluation_point
from elbogap.runs import parameters_finite

SMALL = {"train_size": 120, "test_size": 30, "hidden_dims": [8], "steps": 6, "curve_points": 8, "gap_points": 4,
         "eval_samples": 8, "quadrature_points": 8}


def test_a_q_star_refit_during_training_leaves_the_trained_guide_in_the_param_store():
    """--dynamics-points refits q* at every evaluation; the NaN check and SVI must still see the trained guide."""
    config = Config(**SMALL, dynamics_points=4)
    data = load_dataset(config)
    model, guide = build(config, data, "diag")
    trainer = make_trainer(config, model, guide, data, seed=0)
    trainer.run(3)
    store = pyro.get_param_store()
    before = {name: store[name].unconstrained() for name in store.keys()}
    point = evaluation_point(model, guide, data, config)
    assert "dynamics_elbo_star" in point
    assert {name: store[name].unconstrained() for name in store.keys()} == before  # the same tensors, no others
    trained = {id(p) for p in guide.parameters()}
    assert trained <= {id(p) for p in trainer.svi.params}  # what the NaN check reads: the trained tensors
    with torch.no_grad():
        next(guide.parameters()).fill_(float("nan"))
    assert not parameters_finite(trainer.svi.params)


def test_the_training_split_is_evaluated_on_a_seeded_subset_and_says_so():
    config = Config(**SMALL, train_eval_points=50)
    data = load_dataset(config)
    model, guide = build(config, data, "diag")
    first = evaluate_splits(model, guide, data, config, seed=0)
    again = evaluate_splits(model, guide, data, config, seed=0)
    assert (first["train"]["num_points"], first["train"]["split_points"]) == (50, 120)
    assert (first["test"]["num_points"], first["test"]["split_points"]) == (30, 30)
    for split in ("train", "test"):  # each split carries its points' numbers to the run's points.npz, as arrays
        points, repeated = first[split].pop(CARRIED), again[split].pop(CARRIED)
        assert len(points["row"]) == first[split]["num_points"] and points.keys() == repeated.keys()
        assert all(np.array_equal(points[key], repeated[key], equal_nan=True) for key in points)
    assert first == again


def test_every_model_elbogap_builds_is_evaluated_by_the_per_datapoint_protocol():
    config = Config(**SMALL)
    model, _ = build(config, load_dataset(config), "diag")
    assert protocol_for(model) is PROTOCOLS["vae"] and protocol_for(model).evaluate is evaluate_splits
