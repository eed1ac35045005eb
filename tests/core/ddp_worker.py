"""Run by test_multiprocess.py under torchrun: train, then dump each rank's state."""

import sys
from pathlib import Path

import torch

from pgrpo.core.config import PolicyConfig
from pgrpo.core.trainer import Trainer

out = Path(sys.argv[1])
cfg = PolicyConfig(model="tiny-random-llama", steps=2, prompts_per_step=2, num_generations=4,
                   max_new_tokens=8, micro_batch_size=4, lr=1e-3, checkpoint_every=2)
trainer = Trainer(cfg, out / "run")
trainer.train()
rank = trainer.acc.process_index
first = next(trainer.acc.unwrap_model(trainer.model).parameters()).detach().clone()
torch.save({"stats": trainer.stats.state_dict(), "param": first}, out / f"rank{rank}.pt")
