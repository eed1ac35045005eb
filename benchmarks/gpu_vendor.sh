#!/usr/bin/env bash
# Fill .gpu_vendor/ (git-ignored, ~17 MB) with what benchmarks/gpu_check.sh needs on a GPU
# machine that lacks it: pure-Python test/config packages and SmolLM2's config + tokenizer.
set -eu
site=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
rm -rf .gpu_vendor && mkdir -p .gpu_vendor/site .gpu_vendor/smollm2-config
for p in pydantic pydantic_core typing_inspection annotated_types pytest _pytest pluggy iniconfig py.py; do
    cp -r "$site/$p" .gpu_vendor/site/
done
# pydantic_core is compiled: take the wheel for the GPU machine's Python (3.12 there).
rm -rf .gpu_vendor/site/pydantic_core
core=$(.venv/bin/python -c "import pydantic_core; print(pydantic_core.__version__)")
.venv/bin/pip download -q "pydantic_core==$core" --python-version "${GPU_PYTHON:-3.12}" \
    --only-binary=:all: --platform manylinux_2_17_x86_64 --no-deps -d .gpu_vendor/wheels
.venv/bin/python -m zipfile -e .gpu_vendor/wheels/pydantic_core-*.whl .gpu_vendor/site
model=$(.venv/bin/python -c "from pgrpo.core.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))")
cp "$model"/*.json "$model"/*.jinja .gpu_vendor/smollm2-config/
du -sh .gpu_vendor
