"""EvalConfig: the `evaluate` section of params.yaml, in a module of its own because both
the stage (pgrpo.stages.evaluation.evaluate) and the per-policy measures it calls
(pgrpo.stages.evaluation.policy_measures) read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pgrpo.core.config import Section


class EvalConfig(Section):
    """Evaluation of the trained policies (params.yaml section `evaluate`)."""

    prompts_per_group: int = Field(
        16, ge=1, description="held-out test prompts per group (seeded draw; fewer if fewer exist)")
    report_prompts: Literal["test", "val"] = Field(
        "test", description="which held-out prompts the report's numbers and verdicts are on: "
        "test (a result) or val (tuning shared knobs by the report's own rule, never a result; "
        "needs val_prompts_per_group: 0, as the validation prompts are then the reported ones)")
    samples_per_prompt: int = Field(4, ge=1, description="completions per prompt and policy")
    val_prompts_per_group: int = Field(
        8, ge=0, description="validation prompts per group: they pick the champion, and the "
        "report's numbers never use them (0 = champion by the test numbers, and the report says so)")
    val_samples_per_prompt: int = Field(2, ge=1, description="completions per validation prompt")
    max_new_tokens: int | None = Field(None, ge=1, description="None = the policy section's")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (KL is measured at it)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; the KL assumes 1.0")
    seed: int = Field(123, description="prompt draw and sampling seeds, shared by every policy")
    n_boot: int = Field(1000, ge=1, description="bootstrap resamples for the CIs")
    ci_level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    convergence_fraction: float = Field(
        0.9, gt=0, le=1, description="steps-to-fraction: share of the training reward gain")
    smooth_window: int = Field(3, ge=1, description="running-mean window of the training curves")
    kl_limit: float = Field(0.1, gt=0, description="'helps' needs KL to the base below this, "
                            "nats/token (pgrpo.stages.evaluation.metrics.helps_users)")
    batch_size: int = Field(
        128, ge=1, description="sequences per forward (sampling, KL, likelihood, reward model); "
        "decoding 128 rows together yields ~1.4x the tokens a second of 32 on 2 CPU cores")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', ...")
    neutral_text: str | None = Field(
        None, description="text file, one passage a line; None = pgrpo/stages/evaluation/neutral.txt")

    @model_validator(mode="after")
    def _reported_prompts_do_not_also_pick(self):
        if self.report_prompts == "val" and self.val_prompts_per_group:
            raise ValueError("report_prompts: val reports on the validation prompts, so they cannot "
                             "also pick the champion: set val_prompts_per_group: 0")
        return self
