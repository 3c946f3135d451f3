"""Each run's per-point numbers (points.npz): the split's means are their means, on the same points for every guide."""

import json

import numpy as np
import pytest

from elbogap.api import Comparison
from elbogap.cli import main
from elbogap.errors import UsageError
from elbogap.points import load_points

STUDY = ["compare", "--guides", "diag,full", "--seeds", "0", "--latent-dim", "3", "--steps", "60", "--train-size",
         "200", "--test-size", "30", "--train-eval-points", "50", "--ais-points", "6", "--gap-points", "0",
         "--ais-steps", "30", "--ais-chains", "4", "--leapfrog-steps", "2", "--eval-samples", "16", "--iw-samples",
         "32", "--hidden-dims", "16", "--jobs", "1", "--quiet", "--no-figures"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("points")
    assert main([*STUDY, "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_each_splits_means_are_the_means_of_its_saved_points(study):
    out, results = study
    for run in results["runs"]:
        points = load_points(out / run["run_dir"])
        assert list(points["test"]["row"]) == list(range(30))
        rows = points["train"]["row"]  # the seeded subset of --train-eval-points rows, in order
        assert len(rows) == 50 and len(set(rows)) == 50 and list(rows) == sorted(rows) and rows.max() < 200
        for split in ("train", "test"):
            numbers, metrics = points[split], run[split]
            assert numbers["elbo"].mean() == pytest.approx(metrics["elbo"], rel=1e-6)
            assert numbers["log_px_iwae"].mean() == pytest.approx(metrics["log_px_iwae"], rel=1e-6)
            covered = ~np.isnan(numbers["log_px"])  # AIS on --ais-points of them; NaN elsewhere
            assert covered.sum() == metrics["log_px_points"] == 6
            assert numbers["kl_gap"][covered] == pytest.approx(numbers["log_px"][covered] - numbers["elbo"][covered])
            assert numbers["kl_gap"][covered].mean() == pytest.approx(metrics["kl_gap"], rel=1e-5)
            assert (numbers["log_px_stderr"][covered] > 0).all()


def test_the_guides_of_a_seed_have_log_px_on_the_same_points_and_the_api_pairs_them(study):
    out, results = study
    diag, full = (load_points(out / run["run_dir"])["test"] for run in results["runs"])
    assert np.array_equal(np.isnan(diag["log_px"]), np.isnan(full["log_px"]))  # AIS on one seeded subset
    assert not np.array_equal(diag["elbo"], full["elbo"])  # each guide trained its own model here

    table = Comparison(results, out).points()
    assert len(table) == 60 and {row["guide"] for row in table} == {"diag", "full"}
    first = next(row for row in table if row["guide"] == "full" and row["row"] == 0)
    assert first["elbo"] == pytest.approx(float(full["elbo"][0])) and isinstance(first["seed"], int)
    assert len(Comparison(results, out).points("train")) == 100
    with pytest.raises(UsageError, match="not one of test, train"):
        Comparison(results, out).points("held-out")


def test_a_study_of_global_latents_points_to_the_arviz_export_instead(study):
    out, results = study
    # a record of global latents: its training split is the whole data set, one unit naming its rows, and no split
    # holds means over points (a held-out split holds only its predictive density)
    runs = [{**{key: value for key, value in run.items() if key != "test"},
             "train": {**run["train"], "units": 1, "rows": "every row of data.csv"}} for run in results["runs"]]
    with pytest.raises(UsageError, match="elbogap.load"):
        Comparison({**results, "runs": runs}, out).points()
