"""Config, prompts, rule reward, tiny model and checkpoint files."""

import json

import pytest
import torch

from pgrpo.core.advantages import GroupRewardStats
from pgrpo.core.checkpoint import latest_checkpoint, save_checkpoint
from pgrpo.core.config import PolicyConfig, add_config_args, load_section, section_from_cli
from pgrpo.core.models import build_tiny_model, resolve_model
from pgrpo.core.prompts import BUILTIN_GROUPS, builtin_prompts, load_prompts
from pgrpo.core.rewards import (
    REWARDS,
    count_words,
    get_reward_fn,
    length_preference_reward,
    movielens_rule_reward,
)


def test_unknown_params_key_is_an_error_naming_it(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("policy:\n  steps: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_section(p, "policy", PolicyConfig)
    p.write_text("policy:\n  steps: 0\n")
    with pytest.raises(ValueError, match="steps"):
        load_section(p, "policy", PolicyConfig)
    p.write_text("policy:\n  steps: 7\n")
    assert load_section(p, "policy", PolicyConfig, {"lr": 1e-4}).steps == 7


def test_a_stage_command_reads_its_section_with_flags_over_it(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--params")
    add_config_args(parser, PolicyConfig)
    p = tmp_path / "params.yaml"
    p.write_text("policy:\n  steps: 3\n  lr: 0.1\n")
    cfg = section_from_cli(parser.parse_args(["--params", str(p), "--lr", "0.2"]), "policy",
                           PolicyConfig)
    assert (cfg.steps, cfg.lr) == (3, 0.2)  # the file's steps, the flag's lr
    missing = str(tmp_path / "none.yaml")  # no file: the class defaults, the flags over them
    cfg = section_from_cli(parser.parse_args(["--params", missing, "--lr", "0.2"]), "policy",
                           PolicyConfig)
    assert (cfg.steps, cfg.lr) == (PolicyConfig().steps, 0.2)
    with pytest.raises(ValueError, match=f"{p}, section 'policy'"):
        section_from_cli(parser.parse_args(["--params", str(p), "--steps", "-1"]), "policy",
                         PolicyConfig)
    with pytest.raises(ValueError, match="command-line flags of section 'policy'"):
        section_from_cli(parser.parse_args(["--params", missing, "--steps", "-1"]), "policy",
                         PolicyConfig)


def test_set_overrides_parse_merge_and_name_what_is_wrong(tmp_path):
    from pgrpo.core.config import load_params, params_with_sets, parse_sets

    assert parse_sets(["policy.lr=1e-5", "policy.steps=3", "compare.seeds=[0, 1]",
                       "algorithms.x.half_life=null", "policy.system_prompt=Be brief."]) == {
        "policy": {"lr": 1e-5, "steps": 3, "system_prompt": "Be brief."},
        "compare": {"seeds": [0, 1]}, "algorithms": {"x": {"half_life": None}}}
    for bad, message in [("policy.lr", "SECTION.KEY=VALUE"), ("lr=1", "SECTION.KEY=VALUE"),
                         ("policy..lr=1", "SECTION.KEY=VALUE"), ("policy.lr=[1", "not valid YAML")]:
        with pytest.raises(ValueError, match=message):
            parse_sets([bad])
    with pytest.raises(ValueError, match="inside a value"):
        parse_sets(["policy.lr=1", "policy.lr.x=2"])
    p = tmp_path / "params.yaml"
    p.write_text("policy:\n  steps: 3\n  lr: 0.1\n")
    assert load_params(p, ["policy.lr=0.2"]) == {"policy": {"steps": 3, "lr": 0.2}}
    with pytest.raises(ValueError, match="--set: unknown section 'polcy'"):
        load_params(p, ["polcy.lr=0.2"])
    with params_with_sets(p) as same:
        assert same == p
    with params_with_sets(p, ["policy.steps=9"]) as tmp:
        assert load_section(tmp, "policy", PolicyConfig).steps == 9
    assert not tmp.exists() and "steps: 3" in p.read_text()  # the file itself never changes


def test_params_yaml_in_repo_is_valid():
    from tests.conftest import REPO

    cfg = load_section(REPO / "params.yaml", "policy", PolicyConfig)
    assert cfg.advantage == "pgrpo"


def test_builtin_prompts_are_seeded_with_a_majority_and_minorities():
    a, b = builtin_prompts(300, seed=1), builtin_prompts(300, seed=1)
    assert a.prompts == b.prompts and torch.equal(a.group_ids, b.group_ids)
    shares = torch.bincount(a.group_ids, minlength=len(a.group_names)).float() / len(a)
    for name, share in zip(a.group_names, shares):
        assert abs(share - BUILTIN_GROUPS[name][0]) < 0.08
    assert all("target_words" in m for m in a.metadata)


def test_prompt_tables_load_and_bad_rows_are_named(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "x", "group": "a", "target_words": 3}\n{"prompt": "y", "group": "b"}\n')
    ps = load_prompts(str(f))
    assert ps.group_names == ["a", "b"] and ps.metadata[0] == {"target_words": 3}
    f.write_text('{"prompt": "x", "group": "a"}\n{"prompt": " ", "group": "b"}\n')
    with pytest.raises(ValueError, match=r"prompt row 1: missing or empty 'prompt'"):
        load_prompts(str(f))
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ValueError, match=r"p.txt: expected .parquet, .csv or .jsonl"):
        load_prompts(str(tmp_path / "p.txt"))


def test_length_reward_by_hand():
    meta = [{"target_words": 4}] * 4
    r = length_preference_reward([""] * 4, ["one two three four", "one two", "", "a b c d e f g h"],
                                 torch.zeros(4, dtype=torch.int64), meta)
    assert r.tolist() == [1.0, 0.5, 0.0, 0.5]
    assert count_words("Don't stop—it's rock-n-roll!") == 4
    assert get_reward_fn("length") is length_preference_reward
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        get_reward_fn("nope")


def test_tiny_model_and_tokenizer_round_trip():
    model, tok = build_tiny_model()
    text = "Hello, wörld! 🎵"
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.config.vocab_size == len(tok)
    assert resolve_model("some/hub-id") == "some/hub-id"


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    model, _ = build_tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    stats = GroupRewardStats()
    (tmp_path / "checkpoints" / "step_000009.tmp").mkdir(parents=True)  # a write that died
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, stats, {"note": "x"}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.endswith(".tmp"))
    assert names == ["step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path).name == "step_000003"
    assert json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())["step"] == 3


def test_advantage_accepts_every_registered_estimator_and_names_them_on_error():
    from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS

    for name in ADVANTAGE_ESTIMATORS:
        assert PolicyConfig(advantage=name).advantage == name
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'; registered: .*pgrpo_scale"):
        PolicyConfig(advantage="ppo")


def test_sgd_optimizer_is_plain_sgd(tmp_path, tiny_cfg):
    from pgrpo.core.trainer import Trainer

    trainer = Trainer(tiny_cfg(optimizer="sgd", lr=0.05), tmp_path)
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_movielens_rule_reward():
    meta = {"heldout_titles": ["Toy Story (1995)", "Matrix, The (1999)"],
            "liked_genres": ["Sci-Fi", "Comedy", "War", "Children's"]}
    completions = [
        "You should watch TOY STORY next!",               # held-out title, any case, no year
        "Try The Matrix.",                                # 'Matrix, The' written naturally
        "Matrix, The (1999) is a classic",                # the raw MovieLens form
        "A sci-fi comedy would suit you.",                # 2 of 4 genres
        "Something with children's humour",               # 1 of 4 genres
        "Watch Toy Soldiers, an award-winning drama.",    # no title; 'war' inside 'award' is no genre
        "",
    ]
    got = movielens_rule_reward(["q"] * len(completions), completions, torch.zeros(len(completions)),
                                [meta] * len(completions))
    assert got.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.25, 0.125, 0.0, 0.0])
    assert movielens_rule_reward(["q"], ["comedy"], torch.zeros(1), [{"heldout_titles": []}]).tolist() == [0.0]
    with pytest.raises(KeyError, match="sample 0"):
        movielens_rule_reward(["q"], ["x"], torch.zeros(1), [{}])
    # registered by name, as policy.reward and the judge find it
    assert REWARDS["movielens_rule"] is movielens_rule_reward
    assert get_reward_fn("movielens_rule") is movielens_rule_reward
