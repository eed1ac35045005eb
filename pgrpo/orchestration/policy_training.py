"""The train_policy stage's training, in this process or on `policy.num_processes` processes.

    python -m pgrpo.orchestration.pipeline train_policy --algorithm grpo --set policy.num_processes=2
    dvc exp run -S policy.num_processes=2 train_policy@grpo     # the same knob through DVC

With `num_processes` > 1 the stage launches `accelerate launch --multi_gpu --num_processes N`
(one process per GPU; on a machine without one, N CPU processes that talk over gloo, each
with cores / N threads) running this module's `main`, and waits for it. Each process trains
on its share of the global batch (`prompts_per_step` split over the processes, sampled with
the draws one process would use: pgrpo.core.trainer); every process holds the same P-GRPO
group statistics. The main process writes the run folder (metrics.jsonl, checkpoints, the
exported model), as in one process, so a killed multi-process stage resumes from its
checkpoint, under either process count only if the config is unchanged.

MLflow records the run once: the launched main process appends each step's metrics to a
file this process follows, and this process, the one inside the stage's MLflow run, feeds
them to the stage's loggers (the MLflow run, the pipeline run's curve copy, a Prefect
progress artifact) as the trainer would in process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pgrpo.core import paths
from pgrpo.core.config import PolicyConfig
from pgrpo.core.metric_log import JsonlLogger, MetricLogger, MultiLogger


def train(cfg: PolicyConfig, output_dir: Path, loggers: list[MetricLogger],
          fingerprint: dict) -> dict:
    """Train (or resume) into output_dir; {"model_dir", "step", "group_names"}."""
    if cfg.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return _launch(cfg, output_dir, loggers, fingerprint)
    return _train_here(cfg, output_dir, MultiLogger(*loggers) if loggers else None, fingerprint)


def _train_here(cfg: PolicyConfig, output_dir: Path, logger: MetricLogger | None,
                fingerprint: dict) -> dict:
    import pgrpo.stages.reward.training_rewards  # noqa: F401 - the judge / reward-model rewards
    from pgrpo.core.trainer import train_policy

    hooks = []
    if cfg.judge_every:
        from pgrpo.stages.evaluation.judge_curve import JudgeCurve
        hooks.append(JudgeCurve.from_processed(
            paths.PROCESSED, cfg.judge_every, cfg.judge_prompts_per_group,
            cfg.judge_samples_per_prompt, cfg.max_new_tokens, temperature=cfg.temperature,
            system_prompt=cfg.system_prompt, last_step=cfg.steps))
    result = train_policy(cfg, output_dir, logger=logger, hooks=hooks, fingerprint=fingerprint)
    return {"model_dir": str(result.model_dir), "step": result.step,
            "group_names": list(result.group_names)}


def launch_command(num_processes: int, *args: str) -> list[str]:
    """`accelerate launch` of this module's main on `num_processes` processes."""
    import torch

    with socket.socket() as s:  # a free port: two stages may launch at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(num_processes), "--num_machines", "1",
           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not torch.cuda.is_available():  # CPU processes share the cores instead of each taking all
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // num_processes))]
    return cmd + ["-m", __name__, *args]


def _launch(cfg: PolicyConfig, output_dir: Path, loggers: list[MetricLogger],
            fingerprint: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="pgrpo-launch-") as tmp:
        job, stream, result = (Path(tmp) / n for n in ("job.json", "metrics.jsonl", "result.json"))
        job.write_text(json.dumps({"config": cfg.model_dump(), "output_dir": str(output_dir),
                                   "fingerprint": fingerprint}))
        stream.touch()
        # in this stage's process group, so a signal to the group (Ctrl-C, a kill of `dvc
        # repro`) reaches every rank
        proc = subprocess.Popen(launch_command(cfg.num_processes, str(job), str(stream), str(result)))
        try:
            _follow(stream, proc, loggers)
        except BaseException:
            _stop(proc)
            raise
        finally:
            for lg in loggers:
                lg.close()
        if proc.returncode != 0:
            raise RuntimeError(f"train_policy on {cfg.num_processes} processes (accelerate launch) "
                               f"failed with exit status {proc.returncode}; its output is above")
        return json.loads(result.read_text())


def _follow(stream: Path, proc: subprocess.Popen, loggers: list[MetricLogger],
            every: float = 1.0) -> None:
    """Until `proc` ends, hand each complete line the launched run appends to `loggers`."""
    with stream.open(encoding="utf-8") as f:
        pending = ""
        while True:
            ended = proc.poll() is not None  # read once more after the end: the last rows
            pending += f.read()
            *lines, pending = pending.split("\n")
            for line in filter(str.strip, lines):
                row = json.loads(line)
                step = row.pop("step")
                for lg in loggers:
                    lg.log_metrics({k: v for k, v in row.items() if v is not None}, step)
            if ended:
                return
            time.sleep(every)


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the launcher, which stops its ranks (torch's elastic agent), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    """One launched process: the job file's training; the main process writes the result."""
    job_file, stream, result_file = argv or sys.argv[1:]
    job = json.loads(Path(job_file).read_text())
    cfg = PolicyConfig(**job["config"])
    main_process = int(os.environ.get("RANK", "0")) == 0
    logger = JsonlLogger(stream) if main_process else None  # the trainer logs on the main one only
    result = _train_here(cfg, Path(job["output_dir"]), logger, job["fingerprint"])
    if main_process:
        Path(result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
