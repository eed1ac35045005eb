"""Train a reward model on template pairs + pairs between base samples (out/base_train.jsonl), labelled by the judge with Bradley-Terry noise.

args: N_PROMPTS PAIRS_PER_PROMPT INPUTS OUT_DIR TEMPLATE(1|0) [surface]"""
import json, sys, random, pandas as pd
sys.path.insert(0,'.')
from pgrpo.stages.data.synthetic import prefer_first
from pgrpo.stages.reward.train_reward import RewardConfig, train_reward
from pgrpo.core.io import read_table
rows=[json.loads(l) for l in open('benchmarks/reward_signal/out/base_train.jsonl')]
n_prompts=int(sys.argv[1]); pairs_per=int(sys.argv[2]); inputs=sys.argv[3]; out=sys.argv[4]; template=sys.argv[5]=='1'
surface=len(sys.argv)>6 and sys.argv[6]=='surface'
by={}
for r in rows: by.setdefault(r['prompt_id'],[]).append(r)
rng=random.Random(0); pids=sorted(by)[:n_prompts]
new=[]
for pid in pids:
    rs=by[pid]; combos=[(i,j) for i in range(len(rs)) for j in range(i+1,len(rs)) if rs[i]['completion']!=rs[j]['completion']]
    for i,j in rng.sample(combos, min(pairs_per,len(combos))):
        first=prefer_first(rs[i]['judge'], rs[j]['judge'], 0.5, rng)
        c,rj=(rs[i],rs[j]) if first else (rs[j],rs[i])
        new.append({'pair_id':f'{pid}-op{len(new)}','user_id':c['user_id'],'prompt_id':pid,'prompt':c['prompt'],'chosen':c['completion'],'rejected':rj['completion'],'split':'train'})
pairs=read_table('data/processed/pairs.parquet')
df=pd.concat(([pairs] if template else [pairs[pairs.split=='eval']])+[pd.DataFrame(new)],ignore_index=True)
df.to_parquet('benchmarks/reward_signal/out/pairs_mix.parquet')
print('onpolicy pairs',len(new))
m=train_reward(RewardConfig(encoder='minilm',epochs=4,batch_size=16,head_lr=0.003,max_length=128,freeze_encoder=True,inputs=inputs,surface_features=surface), 'benchmarks/reward_signal/out/pairs_mix.parquet','data/processed/groups.parquet',out)
print(m['eval_accuracy'])
