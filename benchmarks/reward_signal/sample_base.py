"""Sample the base policy (SmolLM2) on held-out test prompts (eval N G) or training prompts (train N G); judge-score them."""
import json, sys, time, torch
sys.path.insert(0, '.')
from pathlib import Path
from pgrpo.stages.evaluation.evaluate import EvalConfig, eval_prompts
from pgrpo.stages.evaluation.policy_measures import run_policy
from pgrpo.core.config import PolicyConfig
from pgrpo.core.models import load_policy
from pgrpo.stages.evaluation.judge import judge_scores
from pgrpo.core.io import read_table
from pgrpo.core.prompts import load_prompts
torch.set_num_threads(2)
P = Path('data/processed')
which = sys.argv[1]; per = int(sys.argv[2]); g = int(sys.argv[3])
pol = PolicyConfig(max_new_tokens=40)
cfg = EvalConfig(samples_per_prompt=g, batch_size=24, seed=7 if which=='train' else 123)
if which == 'eval':
    ps = eval_prompts(P/'prompts.parquet', P/'groups.parquet', per, 123)
else:
    full = load_prompts(str(P/'prompts.parquet'), 0, P/'groups.parquet', split='train')
    gen = torch.Generator().manual_seed(5)
    idx = torch.randperm(len(full), generator=gen)[:per].tolist()
    ps = full.subset(idx)
model, tok = load_policy('smollm2-135m-instruct'); model.eval()
t = time.time()
comps, _ = run_policy(model, tok, None, ps, cfg, pol)
print('sampled', len(comps), time.time()-t, flush=True)
judge = read_table(P/'judge.parquet')
users = [m['user_id'] for m in ps.metadata for _ in range(g)]
js = judge_scores(judge, users, comps)
with open(f'benchmarks/reward_signal/out/base_{which}.jsonl','w') as f:
    for i,c in enumerate(comps):
        m = ps.metadata[i//g]
        f.write(json.dumps({'prompt_id': m['prompt_id'], 'user_id': m['user_id'], 'prompt': ps.prompts[i//g],
          'group': ps.group_names[int(ps.group_ids[i//g])], 'completion': c, 'judge': float(js[i])})+'\n')
