"""The reference of results.json lists what the records hold; the end-to-end tests hold their records to it."""

from tests.results_reference import documented, undocumented


def test_a_key_the_reference_lacks_is_named_where_it_sits():
    assert {"log_px", "kl_gap", "log_evidence", "gain_stderr", "effective_chains"} <= documented()
    results = {"config": {}, "runs": [{"guide": "diag", "novel": 1, "test": {"log_px": 0.0, "novel_metric": 2.0},
                                      "evidence": {"stderr": 0.1, "novel_stage": {}}}]}
    assert undocumented(results) == {"run.novel", "run.test.novel_metric", "run.evidence.novel_stage"}
