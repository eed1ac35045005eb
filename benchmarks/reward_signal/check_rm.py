"""The reward-signal check (pgrpo.stages.evaluation.reward_check) of a reward-model folder on out/base_eval.jsonl."""
import json, sys, numpy as np, torch
sys.path.insert(0,'.')
from pgrpo.stages.reward.reward_model import GroupRewardFn
from pgrpo.stages.evaluation.reward_check import reward_signal_check
rows=[json.loads(l) for l in open('benchmarks/reward_signal/out/base_eval.jsonl')]
names=sorted({r['group'] for r in rows})
rm=sys.argv[1]
fn=GroupRewardFn(rm, names)
gid=torch.tensor([names.index(r['group']) for r in rows])
learned=fn([r['prompt'] for r in rows],[r['completion'] for r in rows],gid,None).double().numpy()
judge=np.array([r['judge'] for r in rows])
chk=reward_signal_check(learned,judge,np.array([r['prompt_id'] for r in rows]),gid.numpy(),['grpo','pgrpo'],names)
print(f"{'group':18s} within between judge_btw adv_grpo adv_pgrpo n")
for g,v in chk['groups'].items():
    print(f"{g:18s} {v['within_corr']:.2f} {v['between_share']:.2f} {v['judge_between_share']:.2f} {v['adv_corr/grpo']:.2f} {v['adv_corr/pgrpo']:.2f} {v['n_prompts']}")
print('mean within', np.mean([v['within_corr'] for v in chk['groups'].values()]))
