"""The calibration study's report."""

from elbogap.calibration.report import shared_simulations_warning, trained_verdict


def test_a_per_point_guides_training_verdict_reads_as_compares_table_reads_it():
    """A tester's per-point calibration said ``no`` where compare's table said ``unclear`` for the same fit: the
    trend rule could not tell (its gain's interval held the tolerance), which is not a fit shown still rising."""
    unclear = {"guide": "full", "converged": None,
               "convergence": {"rule": "trend", "gain": 0.017, "gain_stderr": 0.007}}
    rising = {"guide": "diag", "converged": False, "convergence": {"rule": "trend", "gain": 0.05, "gain_stderr": 0.006}}
    results = {"runs": [unclear, rising]}
    assert trained_verdict(results, "full", {"converged": 0, "fits": 1}) == "unclear"
    assert trained_verdict(results, "diag", {"converged": 0, "fits": 1}) == "no"
    assert trained_verdict({"runs": [{"guide": "iaf", "converged": True}]}, "iaf", {"converged": 1, "fits": 1}) == "yes"


def test_several_guides_failing_on_the_same_simulations_are_said_not_to_be_independent_tests():
    """A tester's three Gaussian families of a conjugate regression read VSBC p 0.011, 0.012 and 0.011, each
    asymmetric, on one seed (0.087 on the next): one draw of data sets, not three findings."""
    def row(symmetric):
        return {"sites": {"w": {"sbc_calibrated": True, "vsbc_symmetric": symmetric}}}

    (line,) = shared_simulations_warning({"full": row(False), "lowrank": row(False), "diag": row(True)})
    assert line.startswith("- full, lowrank fail a test on the same simulated data sets")
    assert "another first --seeds" in line
    assert shared_simulations_warning({"full": row(False), "diag": row(True)}) == []
