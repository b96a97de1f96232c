"""A user's own models and prompts, end to end: a ChatML Qwen2 policy (grouped-query
attention, tied embeddings, two stop ids), a multi-turn messages JSONL with bad rows, two
reward models with chat templates, no verifier, and gold = one of the reward models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.store import table_files
from tests.chat_models import EOT, IM_END, WORDS

pytestmark = pytest.mark.slow


def _prompts_file(path):
    rows = []
    for i in range(40):
        # Distinct contents: (i % 12, i // 12) differ for every i < 144.
        words = [WORDS[i % 12], WORDS[i // 12], WORDS[(i * 5) % 12]][:2 + i % 2]
        if i % 3 == 0:
            conversation = " ".join(words)  # a plain string is one user turn
        elif i % 3 == 1:
            conversation = [{"role": "user", "content": " ".join(words)}]
        else:  # multi-turn, with a system turn and an earlier answer
            conversation = [{"role": "system", "content": "Repeat the last word."},
                            {"role": "user", "content": words[0]},
                            {"role": "assistant", "content": words[0]},
                            {"role": "user", "content": " ".join(words)}]
        rows.append(json.dumps({"uid": f"u{i:03d}", "conversation": conversation}))
    rows += [
        "{broken",
        json.dumps({"uid": "x1"}),
        json.dumps({"uid": "x2", "conversation": [{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "b"}]}),
        json.dumps({"uid": "x3", "conversation": [{"role": "robot", "content": "a"}]}),
        json.dumps({"uid": "u000", "conversation": "duplicate id"}),
        json.dumps({"uid": "x4", "conversation": " ".join(["apple river"] * 80)}),
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(path, models, prompts):
    path.write_text(f"""
[prompts]
path = "{prompts}"
column = "conversation"
id_column = "uid"
heldout_fraction = 0.2
n_train_per_round = 16
n_heldout = 6
max_prompt_tokens = 96

[policy]
model = "{models['policy']}"
dtype = "float32"

[generation]
k = 4
max_new_tokens = 8
shard_size = 8

[judging]
sources = ["reward_model"]
reward_models = ["{models['helpful']}", "{models['gold']}"]
max_length = 40

[rank]
weights = ["rm:*=1"]

[loop]
gold = "rm:gold-rm"
training_reward = "rm:*"
eval_k = 2

[train]
epochs = 1
groups_per_batch = 4
""")
    return path


def _grpo(*args, env):
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_own_chat_model_and_prompts_end_to_end(tmp_path, chat_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    workdir = tmp_path / "mine"
    prompts = _prompts_file(tmp_path / "chats.jsonl")
    cfg = _config(tmp_path / "mine.toml", chat_models, prompts)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}

    gen = _grpo("generate", "--workdir", str(workdir), "--config", str(cfg), env=env)
    summary = json.loads(gen.stdout)
    counts = summary["prompts"]
    assert counts["rows_read"] == 46 and counts["accepted"] == 40
    assert counts["quarantined"] == 6 and counts["accepted"] + counts["quarantined"] == 46
    assert "round 0" in gen.stderr

    looped = _grpo("iterate", "--rounds", "1", "--workdir", str(workdir), "--config", str(cfg),
                   env=env)
    # Round 0's policy and the trained policy-r001 shared one vLLM engine: the trained
    # policy kept the base's tokenizer files byte for byte, so its weights loaded in place.
    assert "policy engine: 1 start(s)" in looped.stdout and "1 weight reload(s)" in looped.stdout
    trained = workdir / "models" / "policy-r001"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (trained / name).read_bytes() == (chat_models["policy"] / name).read_bytes()

    tok = AutoTokenizer.from_pretrained(chat_models["policy"])
    stops = {tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(EOT)}
    prompts_t = pq.read_table(workdir / "rounds" / "r000" / "prompts.parquet").to_pylist()
    for p in prompts_t:  # the chat template, every turn, as the policy saw it
        assert p["prompt_token_ids"] == list(tok.apply_chat_template(
            p["messages"], add_generation_prompt=True, tokenize=True, return_dict=False))
    assert any(len(p["messages"]) == 4 for p in prompts_t)

    cands = pl.read_parquet(table_files(workdir, "candidates")).filter(pl.col("round") == 0)
    assert cands.height == 16 * 4
    rows = cands.to_dicts()
    for r in rows:
        assert r["n_tokens"] == len(r["token_ids"])
        assert not r["token_ids"] or r["token_ids"][-1] not in stops
        assert (r["stop_token_id"] in stops) == (r["finish_reason"] == "stop")
    assert {r["stop_token_id"] for r in rows} >= stops, "both stop ids should end samples"

    # The end-to-end check that generation and training see the same tokens: vLLM's own
    # log-probability of each sample equals the trainer's on the stored ids (float32 on both
    # sides, so the tolerance is tight; a token off by one would cost several nats).
    from trainers.data import RankedGroup, tokenize_groups
    from trainers.logprobs import GroupBatch, group_logps

    by_prompt = {p["prompt_id"]: p for p in prompts_t}
    model = AutoModelForCausalLM.from_pretrained(chat_models["policy"], dtype=torch.float32)
    diffs = []
    for gid, group in cands.group_by("group_id"):
        g = group.sort("candidate_idx").to_dicts()
        ranked = RankedGroup(gid[0], by_prompt[g[0]["prompt_id"]]["prompt_token_ids"],
                             [r["candidate_id"] for r in g], [r["text"] for r in g],
                             [r["token_ids"] for r in g], [r["stop_token_id"] for r in g],
                             [0] * len(g), 1.0)
        from trainers.data import collate

        batch, _, _ = collate(tokenize_groups([ranked], tok.eos_token_id), tok.pad_token_id)
        with torch.no_grad():
            ours = group_logps(model, GroupBatch(*batch.__dict__.values()))[0].tolist()
        diffs += [abs(a - r["logprob"]) for a, r in zip(ours, g, strict=True)]
    assert max(diffs) < 2e-3, max(diffs)

    judged = pl.read_parquet(table_files(workdir, "judgments"))
    assert set(judged["source"]) == {"rm:helpful-rm", "rm:gold-rm"}  # no verifier, and no
    # ensemble: the gold reward model is not combined with the training one
    weights = json.loads((workdir / "rounds" / "r000" / "source_weights.json").read_text())
    assert weights["weights"] == {"rm:gold-rm": 0.0, "rm:helpful-rm": 1.0}
    evals = pl.read_parquet(table_files(workdir, "evals"))
    assert sorted(set(evals["round"])) == [0, 1]
    values = {(r["round"], r["metric"]): r["value"] for r in evals.to_dicts()}
    for rnd in (0, 1):
        assert values[(rnd, "gold_score")] == values[(rnd, "gold_score")]  # not NaN
        assert 0.0 <= values[(rnd, "hack_rate")] <= 1.0
    assert values[(1, "kl_to_base")] != 0.0
    assert (workdir / "models" / "policy-r001" / "config.json").is_file()
    quarantine = pl.read_parquet(table_files(workdir, "quarantine"))
    assert quarantine.height == 6
