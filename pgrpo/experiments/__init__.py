"""Experiments that use the pipeline to answer a question; no stage imports them.

    compare.py, compare_summary.py       algorithms over paired seeds: runs, summary, verdicts
    mechanism*.py                        the mechanism experiment: a tiny world where the
                                         paper's mechanism can be seen, its grid and report

Imports everything below it (orchestration, tracking, stages, core); only tasks/ and
flows/ import it (tests/test_layers.py).
"""
