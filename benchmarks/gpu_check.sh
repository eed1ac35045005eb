#!/usr/bin/env bash
# The trainer's checks on a lent GPU machine, in one call (see README, "GPU").
#
#     bash benchmarks/gpu_check.sh          # from the repo root, on the GPU machine
#
# That machine has torch, transformers, accelerate and peft only, and takes at
# most 64 MiB of files: pydantic / pytest come from .gpu_vendor/site when missing,
# and the SmolLM2 architecture is built from .gpu_vendor/smollm2-config (config
# and tokenizer, random weights). Prepare .gpu_vendor with benchmarks/gpu_vendor.sh.
set -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PGRPO_CACHE=${TMPDIR:-/tmp}/pgrpo-cache
export PYTHONPATH=$PWD:$PWD/.gpu_vendor/site  # our package + what the machine lacks
python - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PY
echo "== trainer, rollout, loss and advantage tests on the GPU (precision auto = bf16)"
timeout 240 python -m pytest -q -p no:cacheprovider tests/core/test_trainer.py tests/core/test_rollout.py \
    tests/core/test_loss.py tests/core/test_advantages.py 2>&1 | tail -8
echo "== speed: SmolLM2-135M architecture, fixed config (4 prompts x G=8, 48 tokens)"
timeout 150 python benchmarks/trainer_speed.py --random_init_from .gpu_vendor/smollm2-config --steps 4 2>&1 \
    | grep -v Warning | tail -9
echo "== speed: the same with 32 prompts a step (256 completions)"
timeout 150 python benchmarks/trainer_speed.py --random_init_from .gpu_vendor/smollm2-config --steps 3 \
    --prompts_per_step 32 2>&1 | grep -v Warning | tail -7
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
