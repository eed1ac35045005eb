"""The evaluate stage: every policy and the base judged on held-out prompts.

    evaluate.py         the stage: samples, scores, intervals, verdicts, outputs
    eval_config.py      EvalConfig, the `evaluate` params section
    policy_measures.py  one policy's samples, KL to the base, neutral-text likelihood
    eval_cache.py       each policy's evaluation, computed once while its inputs hold
    judge.py            the judge training never sees (the persona utilities, held-out items)
    judge_curve.py      the judge on validation prompts during training (learning curves)
    metrics.py          bootstrap and t intervals, verdicts, win rates, the 'helps' rule
    curves.py           training curves: AUC, steps to a fraction of the gain
    reward_check.py     does the training reward rank what the judge ranks
    report.py, plots.py the report and its figures
"""
