"""The user's prompt dataset: every input format, every kind of bad row, the chat template,
and the per-round draw."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.chat import PromptRenderer
from pipeline.config import ConfigError, PromptsConfig
from pipeline.prompts import heldout_ids, load_prompt_set, train_ids_for_round
from pipeline.store import table_files
from tests.chat_models import chatml_tokenizer

SYSTEM = {"role": "system", "content": "You are helpful."}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    chatml_tokenizer(out)
    return PromptRenderer(out)


def _cfg(**kw) -> PromptsConfig:
    return PromptsConfig(**{"path": "x", "heldout_fraction": 0.0, **kw})


def _write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return path


def test_every_bad_row_is_quarantined_with_its_reason(tmp_path, renderer):
    long_text = " ".join(["apple river stone"] * 60)
    lines = [
        {"id": "a", "prompt": "apple river"},                                       # 1 ok
        {"id": "b", "prompt": [SYSTEM, {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "stone cloud"}]},        # 2 ok
        "{not json",                                                                 # 3
        {"id": "c", "text": "no prompt column"},                                     # 4
        {"id": "d", "prompt": "   "},                                                # 5
        {"id": "e", "prompt": 42},                                                   # 6
        {"id": "f", "prompt": [{"role": "wizard", "content": "x"}]},                 # 7
        {"id": "g", "prompt": [{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "a"}]},              # 8
        {"id": "a", "prompt": "a different prompt, same id"},                        # 9
        {"id": "h", "prompt": "apple river"},                                        # 10
        {"id": "i", "prompt": long_text},                                            # 11
        {"id": "j", "prompt": [{"role": "user", "content": ""}]},                    # 12
        {"prompt": "no id"},                                                         # 13
        "[1, 2]",                                                                    # 14
    ]
    path = _write_jsonl(tmp_path / "p.jsonl", lines[:13] + [""] + lines[13:])
    cfg = _cfg(id_column="id", max_prompt_tokens=64)
    pset = load_prompt_set(tmp_path, [path], cfg, renderer)
    assert pset.read == 14 and len(pset.rows) == 2 and pset.quarantined == 12
    q = pl.read_parquet(table_files(tmp_path, "quarantine"))
    reasons = dict(zip(q["row_number"].to_list(), q["reason"].to_list(), strict=True))
    assert reasons[3].startswith("unreadable line")
    assert reasons[4] == "missing column 'prompt'"
    assert reasons[5] == "empty prompt"
    assert reasons[6].startswith("wrong type: expected a string or a list")
    assert reasons[7].startswith("unknown role 'wizard'")
    assert reasons[8] == "last turn is from the assistant, not the user"
    assert reasons[9] == "duplicate id (first at line 1)"
    assert reasons[10] == "duplicate content (first at line 1)"
    assert reasons[11].startswith("too long:") and "prompts.max_prompt_tokens" in reasons[11]
    assert reasons[12] == "empty content in a user turn"
    assert reasons[13] == "missing id in column 'id'"
    assert reasons[15] == "not a JSON object"  # line numbers count the blank line 14
    assert set(q["source_file"]) == {str(path)}
    # The multi-turn row keeps every turn and is rendered through the chat template.
    row = next(r for r in pset.rows if r["prompt_id"] == "b")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"] == "stone cloud"
    assert row["prompt_token_ids"] == list(renderer.tokenizer.apply_chat_template(
        row["messages"], add_generation_prompt=True, tokenize=True, return_dict=False))
    # A second load reads the cached set back; nothing is re-read or re-quarantined.
    again = load_prompt_set(tmp_path, [path], cfg, renderer)
    assert again.rows == pset.rows and len(table_files(tmp_path, "quarantine")) == 1


def test_each_input_format_reads_the_same_prompts(tmp_path, renderer):
    from datasets import Dataset

    rows = [{"qid": f"q{i}", "question": f"apple {w}", "answer": w}
            for i, w in enumerate(["river", "stone", "cloud", "green"])]
    jsonl = _write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.json").write_text(json.dumps(rows))
    pl.DataFrame(rows).write_csv(tmp_path / "c.csv")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "parts").mkdir()
    _write_jsonl(tmp_path / "parts" / "1.jsonl", rows[:2])
    _write_jsonl(tmp_path / "parts" / "2.jsonl", rows[2:])
    cfg = _cfg(column="question", id_column="qid", reference_column="answer")
    from pipeline.resolve import prompt_files

    results = []
    for spec in (jsonl, tmp_path / "b.json", tmp_path / "c.csv", tmp_path / "d.parquet",
                 tmp_path / "saved", tmp_path / "parts" / "*.jsonl"):
        from pipeline.config import load_config

        paths = prompt_files(load_config(overrides={"prompts.path": str(spec)}), tmp_path)
        pset = load_prompt_set(tmp_path / str(abs(hash(str(spec)))), paths, cfg, renderer)
        results.append([(r["prompt_id"], r["prompt"], r["reference"]) for r in pset.rows])
    assert all(r == results[0] for r in results), results
    assert results[0][0] == ("q0", "apple river", "river")


def test_system_prompt_ids_and_splits(tmp_path, renderer):
    rows = [{"prompt": f"apple {i}"} for i in range(200)]
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    pset = load_prompt_set(tmp_path, [path], _cfg(system_prompt="Be brief.",
                                                  heldout_fraction=0.2), renderer)
    assert all(r["messages"][0] == {"role": "system", "content": "Be brief."}
               for r in pset.rows)
    # Ids are a stable hash of the content: the same file gives the same ids anywhere.
    other = load_prompt_set(tmp_path / "o", [path], _cfg(system_prompt="Be brief.",
                                                         heldout_fraction=0.2), renderer)
    assert [r["prompt_id"] for r in other.rows] == [r["prompt_id"] for r in pset.rows]
    held = len(pset.split("heldout"))
    assert 20 <= held <= 60  # ~20% chosen from the id, deterministically
    split_rows = [{"prompt": f"x {i}", "split": "heldout" if i % 4 == 0 else "train"}
                  for i in range(8)] + [{"prompt": "bad", "split": "test"}]
    spath = _write_jsonl(tmp_path / "s.jsonl", split_rows)
    sset = load_prompt_set(tmp_path / "s", [spath], _cfg(split_column="split"), renderer)
    assert len(sset.split("heldout")) == 2 and len(sset.split("train")) == 6
    assert sset.quarantined == 1


def test_nothing_accepted_is_a_clear_error(tmp_path, renderer):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(ConfigError, match="none of the 2 rows.*missing column 'prompt'"):
        load_prompt_set(tmp_path, [path], _cfg(), renderer)


def test_rounds_draw_fresh_prompts_until_the_dataset_is_used_up():
    ids = [f"p{i:02d}" for i in range(10)]
    rounds = [train_ids_for_round(ids, 4, seed=1, round_=r) for r in range(5)]
    assert rounds == [train_ids_for_round(ids, 4, seed=1, round_=r) for r in range(5)]
    assert all(len(set(r)) == 4 for r in rounds)  # never twice in one round
    first_pass = rounds[0] + rounds[1] + rounds[2][:2]
    assert sorted(first_pass) == ids  # no repeat until every prompt was drawn once
    assert train_ids_for_round(ids, 4, seed=2, round_=0) != rounds[0]
    assert heldout_ids(ids, 3, seed=1) == heldout_ids(list(reversed(ids)), 3, seed=1)
