"""Two processes (CPU, gloo): the multi-GPU code path, through torchrun and through the stage.

accelerate picks up torchrun's environment as it does `accelerate launch`'s
(`accelerate launch --cpu` starts a single process on one machine; the stage launches
`--multi_gpu`, which on a machine without a GPU starts CPU processes on gloo).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_identical_group_stats_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()),
           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed:\n{proc.stderr[-3000:]}")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # Every process merged the gathered global batch: same stats, all samples counted.
    for key in ("ids", "count", "mean", "m2"):
        assert torch.equal(r0["stats"][key], r1["stats"][key]), key
    assert r0["stats"]["count"].sum().item() == 2 * 2 * 4  # steps * prompts (the global batch) * G
    assert torch.equal(r0["param"], r1["param"])  # DDP kept the replicas in sync
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_row_draws_sample_a_batch_the_same_however_it_is_split():
    """Rank-independent sampling: a batch sampled whole, or in two halves as two processes
    would, gives every row the same completion; one process gets the global RNG's draws."""
    from pgrpo.core.models import load_policy
    from pgrpo.core.rollout import RowDraws, derived_seed, generate

    model, tok = load_policy("tiny-random-llama")
    prompts = ["Tell me about tea.", "Name a river.", "Why is the sky blue?", "Count to three."]
    g, seed = 3, derived_seed(7, 1, 0)
    kw = {"max_new_tokens": 10, "temperature": 1.0}
    whole = generate(model, tok, prompts, g, draws=RowDraws(seed, 0, 4 * g), **kw).completions
    halves = [generate(model, tok, prompts[i:i + 2], g, draws=RowDraws(seed, i * g, 4 * g), **kw)
              for i in (0, 2)]
    assert halves[0].completions + halves[1].completions == whole
    assert len(set(whole)) > 1  # the draws differ between rows
    torch.manual_seed(seed)  # one process: the draws of the global RNG, as before RowDraws
    assert generate(model, tok, prompts, g, **kw).completions == whole


def test_train_policy_stage_on_two_processes_trains_as_one_resumes_and_records_once(tmp_path):
    """policy.num_processes=2: the stage launches accelerate (2 CPU processes, gloo). Killed
    after a checkpoint and run again, it resumes and ends with the metrics of one process on
    the same global batch (within float rounding); MLflow holds each step once."""
    import signal
    import time

    import mlflow
    import yaml

    from pgrpo.core.config import read_params
    from pgrpo.core.metric_log import read_metrics
    from tests.orchestration.test_dvc_pipeline import _run, _smoke_repo

    repo, env = _smoke_repo(tmp_path)
    params = read_params(repo / "params.yaml")
    steps = 10
    params["policy"].update(steps=steps, checkpoint_every=2, prompts_per_step=4, max_new_tokens=16)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = [sys.executable, "-m", "pgrpo.orchestration.pipeline"]
    for name in ("prepare", "assign_groups", "train_reward"):
        _run(stage + [name], repo, env)
    one_process = ("from pgrpo.orchestration.pipeline import run_stage; "
                   "run_stage('train_policy', 'params.yaml', 'grpo', policy_root='one')")
    _run([sys.executable, "-c", one_process], repo, env)

    two = stage + ["train_policy", "--algorithm", "grpo", "--set", "policy.num_processes=2"]
    ckpts = repo / "models" / "policy" / "grpo" / "checkpoints"
    proc = subprocess.Popen(two, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (ckpts / "step_000002").is_dir():
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and both ranks
    proc.wait()
    out = _run(two, repo, env)
    assert "resumed from" in out and "starting over" not in out, out[-3000:]

    drop = ("perf/", "train/completion_tokens")
    one = read_metrics(repo / "one" / "grpo" / "metrics.jsonl")
    both = read_metrics(repo / "models" / "policy" / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in both] == list(range(1, steps + 1))
    for a, b in zip(one, both, strict=True):
        assert {k: v for k, v in b.items() if not k.startswith(drop)} == pytest.approx(
            {k: v for k, v in a.items() if not k.startswith(drop)}, rel=1e-3, abs=1e-4), a["step"]
    assert (repo / "models" / "policy" / "grpo" / "model" / "model.safetensors").is_file()

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("pgrpo-smoke")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.info.run_name == "train_policy-grpo" and r.info.status == "FINISHED"
            and r.data.params.get("num_processes") == "2"]
    assert len(runs) == 1, [(r.info.run_name, r.data.params.get("num_processes")) for r in runs]
    resumed = int(out.split("(step ")[1].split(")")[0])
    history = client.get_metric_history(runs[0].info.run_id, "train/reward")
    assert sorted(m.step for m in history) == list(range(resumed + 1, steps + 1))  # each once
