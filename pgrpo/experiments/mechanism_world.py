"""The mechanism experiment's world: its users and prompts, its word-level tokenizer, and
the tilted base policies pre-trained on it (pgrpo.experiments.mechanism has the experiment itself).

    from pgrpo.experiments.mechanism_config import load_config
    from pgrpo.experiments.mechanism_world import make_prompts, pretrain
    cfg = load_config("ci")
    train, heldout = make_prompts(cfg, seed=0)
    policy_dir = pretrain(cfg, tilt=0.8, out_dir=Path("outputs/mechanism/policies"))
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

from pgrpo.stages.data.personas import Persona, make_personas, utility
from pgrpo.stages.data.synthetic import REQUESTS, SITUATIONS, candidate, persona_sizes, profile_text

if TYPE_CHECKING:
    from pgrpo.experiments.mechanism_config import MechanismConfig


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the world

def personas(cfg: MechanismConfig) -> list[Persona]:
    return make_personas(cfg.n_personas)


def _prompt(persona: Persona, rng: random.Random, profile: str | None = None) -> str:
    profile = profile or profile_text(persona, rng)
    return f"{profile}\n{rng.choice(REQUESTS).format(s=rng.choice(SITUATIONS))}"


def make_prompts(cfg: MechanismConfig, seed: int):
    """(train, heldout) PromptSets of a seed; train rows carry user_id and offset_z."""
    from pgrpo.core.prompts import from_records
    from pgrpo.core.rollout import derived_seed

    rng = random.Random(derived_seed(seed, 13))
    ps = personas(cfg)
    sizes = persona_sizes(cfg.train_users, len(ps), cfg.majority_share, cfg.minority_decay)
    users = [p for p, k in zip(ps, sizes) for _ in range(k)]
    rows = []
    for u, p in enumerate(users):
        profile = profile_text(p, rng)
        rows += [{"prompt": _prompt(p, rng, profile), "group": p.name, "user_id": f"u{u}",
                  "offset_z": rng.gauss(0, 1)} for _ in range(cfg.prompts_per_user)]
    heldout = [{"prompt": _prompt(p, rng), "group": p.name, "user_id": f"e{k}_{i}"}
               for k, p in enumerate(ps) for i in range(cfg.eval_prompts_per_group)]
    names = [p.name for p in ps]
    return from_records(rows, names), from_records(heldout, names)


def style_text(persona: Persona, rng: random.Random, max_words: int, best_of: int) -> str:
    """The best of `best_of` template candidates (that fit `max_words` pieces) for `persona`."""
    texts = []
    while len(texts) < best_of:
        t = candidate(rng, rng.choice(SITUATIONS))
        if len(_pieces(t)) < max_words:
            texts.append(t)
    return max(texts, key=lambda t: utility(persona, t))


def _pieces(text: str) -> list[str]:
    """The word tokenizer's split: spaces separate, a newline is a token of its own."""
    out: list[str] = []
    for i, line in enumerate(text.split("\n")):
        out += (["\n"] if i else []) + [w for w in line.split(" ") if w]
    return out


def build_word_tokenizer(seed: int = 0, n_samples: int = 20000):
    """A word-level tokenizer over the task's vocabulary (templates, profiles, requests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pgrpo.core.models import CHATML_TEMPLATE

    rng = random.Random(seed)
    everyone = make_personas()
    words = {"user", "assistant", "system", "\n"}
    for _ in range(n_samples):  # covers every template word, song, hint and situation
        words.update(_pieces(candidate(rng, rng.choice(SITUATIONS))))
        words.update(_pieces(_prompt(rng.choice(everyone), rng)))
    specials = ["[UNK]", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                   bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", chat_template=CHATML_TEMPLATE)


# --------------------------------------------------------------------------- base policies

def sft_pairs(cfg: MechanismConfig, tilt: float, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, answer): users drawn by group size; `tilt` of a minority user's answers in the
    majority's style, the rest in the user's own."""
    rng = random.Random(seed)
    ps = personas(cfg)
    sizes = persona_sizes(1000, len(ps), cfg.majority_share, cfg.minority_decay)
    out = []
    for _ in range(cfg.sft_examples):
        user = rng.choices(ps, weights=sizes)[0]
        # A minority user's answer is in the majority's style with probability `tilt`, else
        # in the user's own; a majority user's always in the majority's. So the base policy
        # personalizes a little (as a chat model does), and at high tilt a minority's own
        # style is a rare success that RL has to amplify.
        style = ps[0] if user is ps[0] or rng.random() < tilt else user
        out.append((_prompt(user, rng), style_text(style, rng, cfg.max_new_tokens, cfg.style_best_of)))
    return out


def pretrain(cfg: MechanismConfig, tilt: float, out_dir: Path) -> Path:
    """SFT a fresh tiny Llama on sft_pairs(tilt); saved as a safetensors folder (reused)."""
    import torch

    from pgrpo.core.models import build_tiny_model
    from pgrpo.core.rollout import chat_prompts

    key = _hash({k: getattr(cfg, k) for k in ("n_personas", "majority_share", "minority_decay",
                 "sft_examples", "sft_epochs", "sft_lr", "sft_batch_size", "style_best_of",
                 "hidden_size", "num_layers", "max_new_tokens")} | {"tilt": tilt})
    folder = out_dir / f"tilt{tilt}-{key}"
    if (folder / "model.safetensors").exists():
        return folder
    tok = build_word_tokenizer()
    model, _ = build_tiny_model(seed=0, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                tokenizer=tok)
    pairs = sft_pairs(cfg, tilt)
    prompts = chat_prompts(tok, [p for p, _ in pairs])
    seqs, starts = [], []
    for prompt, (_, answer) in zip(prompts, pairs):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(p + a)
        starts.append(len(p))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(cfg.sft_epochs):
        order = torch.randperm(len(seqs), generator=gen).tolist()
        for b in range(0, len(order), cfg.sft_batch_size):
            rows = order[b:b + cfg.sft_batch_size]
            width = max(len(seqs[i]) for i in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id)
            labels = torch.full((len(rows), width), -100)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # right padding; loss on the answer (and its EOS) only
                n = len(seqs[i])
                ids[r, :n], mask[r, :n] = torch.tensor(seqs[i]), 1
                labels[r, starts[i]:n] = ids[r, starts[i]:n]
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "sft.json").write_text(json.dumps({"tilt": tilt, "final_loss": loss.item()}))
    tmp.replace(folder)
    return folder
