"""`grpo export`: trl pairs and the listwise layout from a hand-built ranked round, read back
with each format's own library; and trl's DPOTrainer on an export of a real ranked round."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from pipeline.atomic import write_parquet_atomic
from pipeline.export import LEFT_OUT_FEW, LEFT_OUT_TIED, export_ranked
from pipeline.schema import GROUPS, RANKINGS
from pipeline.store import round_dir, table_files
from tests.conftest import copy_store
from tests.judge_helpers import write_round

# Group number -> (status, weight, ranks of candidates 0..3). -1 = excluded.
GROUPS_SPEC = {
    0: ("ok", 1.0, [2, 0, 1, 3]),            # a clear order
    1: ("ok", 1.0, [0, 0, 1, -1]),           # a tie at the top, one candidate excluded
    2: ("intransitive", 0.5, [0, 0, 0, 0]),  # everything tied: no order to learn
    3: ("contested", 0.0, [0, 1, 2, 3]),     # dropped by the status policy
    4: ("unranked", 0.0, [-1, -1, -1, -1]),
    5: ("ok", 1.0, [0, -1, -1, -1]),         # one ranked candidate
    6: ("contested", 0.5, [1, 0, 2, 2]),     # downweighted; a tie at the bottom
}
WRITTEN = {0, 1, 6}


def _text(g: int, i: int) -> str:
    return f"answer {i} of group {g}"


def _cid(g: int, i: int, round_: int = 0) -> str:
    return f"r{round_:03d}:p{g:03d}:{i}"


def _ranked_round(workdir: Path) -> Path:
    write_round(workdir, [f"m{g}" for g in GROUPS_SPEC], k=4,
                texts={g: [_text(g, i) for i in range(4)] for g in GROUPS_SPEC})
    rankings, groups = [], []
    for g, (status, weight, ranks) in GROUPS_SPEC.items():
        gid = f"r000:p{g:03d}"
        rankings += [{"round": 0, "group_id": gid, "candidate_id": _cid(g, i), "rank": r,
                      "score": None} for i, r in enumerate(ranks)]
        groups.append({"round": 0, "group_id": gid, "status": status, "n_sources": 1,
                       "n_cycles": int(status == "intransitive"), "n_source_cycles": 0,
                       "agreement": None, "weight": weight})
    write_parquet_atomic(pa.Table.from_pylist(rankings, RANKINGS.arrow_schema),
                         round_dir(workdir, 0) / "rankings" / "consensus.parquet", RANKINGS)
    write_parquet_atomic(pa.Table.from_pylist(groups, GROUPS.arrow_schema),
                         round_dir(workdir, 0) / "groups" / "consensus.parquet", GROUPS)
    return workdir


def _copy_as_round(workdir: Path, round_: int) -> None:
    """Round 0's files again as round ``round_`` (ids renamed), for round selection."""
    tag = f"r{round_:03d}"
    for table in ("prompts", "candidates", "rankings", "groups"):
        for path in table_files(workdir, table):
            df = pl.read_parquet(path).with_columns(pl.lit(round_, pl.Int32).alias("round"))
            for col in ("group_id", "candidate_id"):
                if col in df.columns:
                    df = df.with_columns(pl.col(col).str.replace("^r000", tag))
            target = round_dir(workdir, round_) / path.relative_to(round_dir(workdir, 0))
            target.parent.mkdir(parents=True, exist_ok=True)
            df.write_parquet(target)


EXPECTED_LEFT_OUT = {"weight 0 under the status policy (contested)": 1,
                     "weight 0 under the status policy (unranked)": 1,
                     LEFT_OUT_TIED: 1, LEFT_OUT_FEW: 1}


@pytest.fixture
def store(tmp_path) -> Path:
    return _ranked_round(tmp_path / "work")


def _pairs(rows) -> set[tuple[str, str]]:
    return {(r["chosen_id"], r["rejected_id"]) for r in rows}


def _check_pair_rows(rows) -> None:
    """What every trl row must hold, whatever the pairing: the conversation as prompt, one
    assistant message each side carrying its candidate's text, a strict order."""
    for r in rows:
        g, ci = int(r["chosen_id"].split(":")[1][1:]), int(r["chosen_id"].split(":")[2])
        ri = int(r["rejected_id"].split(":")[2])
        assert r["prompt"] == [{"role": "user", "content": f"S {g}=m{g}"}]
        assert r["chosen"] == [{"role": "assistant", "content": _text(g, ci)}]
        assert r["rejected"] == [{"role": "assistant", "content": _text(g, ri)}]
        ranks = GROUPS_SPEC[g][2]
        assert (r["chosen_rank"], r["rejected_rank"]) == (ranks[ci], ranks[ri])
        assert 0 <= r["chosen_rank"] < r["rejected_rank"]
        assert r["weight"] == GROUPS_SPEC[g][1] and g in WRITTEN


def test_trl_best_worst_parquet(store, tmp_path):
    out = tmp_path / "pairs.parquet"
    result = export_ranked(store, out, "trl")
    assert (result.pairs, result.layout, result.rounds) == ("best_worst", "conversational", [0])
    assert (result.groups_read, result.groups_written) == (7, 3)
    assert result.groups_left_out == EXPECTED_LEFT_OUT
    assert result.excluded_candidates == 1  # group 1's rank -1; other -1s left with groups

    rows = pq.read_table(out).to_pylist()
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert ds.to_list() == rows and result.rows_written == len(rows)
    _check_pair_rows(rows)
    # Group 0: best 1, worst 3. Tied tiers give every (best, worst) pair, never a tie pair.
    assert _pairs(rows) == {(_cid(0, 1), _cid(0, 3)),
                            (_cid(1, 0), _cid(1, 2)), (_cid(1, 1), _cid(1, 2)),
                            (_cid(6, 1), _cid(6, 2)), (_cid(6, 1), _cid(6, 3))}


def test_trl_all_pairs_jsonl(store, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = export_ranked(store, out, "trl", "all")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert datasets.load_dataset("json", data_files=str(out), split="train").to_list() == rows
    _check_pair_rows(rows)
    expected = set()
    for g in WRITTEN:
        ranks = GROUPS_SPEC[g][2]
        expected |= {(_cid(g, i), _cid(g, j)) for i in range(4) for j in range(4)
                     if 0 <= ranks[i] < ranks[j]}
    assert _pairs(rows) == expected and len(rows) == len(expected) == 6 + 2 + 5
    assert result.rows_written == 13 and result.groups_left_out == EXPECTED_LEFT_OUT


def test_listwise_save_to_disk(store, tmp_path):
    out = tmp_path / "listwise"
    result = export_ranked(store, out, "listwise")
    assert result.pairs is None and result.rows_written == result.groups_written == 3
    rows = {r["group_id"]: r for r in datasets.load_from_disk(str(out))}
    assert set(rows) == {f"r000:p{g:03d}" for g in WRITTEN}
    g0 = rows["r000:p000"]
    assert g0["prompt"] == [{"role": "user", "content": "S 0=m0"}]
    assert g0["candidate_ids"] == [_cid(0, i) for i in (1, 2, 0, 3)]  # best first
    assert g0["completions"] == [_text(0, i) for i in (1, 2, 0, 3)]
    assert g0["ranks"] == [0, 1, 2, 3]
    assert (g0["weight"], g0["status"], g0["round"], g0["prompt_id"]) == (1.0, "ok", 0, "p000")
    # Ties keep their equal ranks; the excluded candidate is not there at all.
    assert rows["r000:p001"]["ranks"] == [0, 0, 1]
    assert rows["r000:p001"]["candidate_ids"] == [_cid(1, 0), _cid(1, 1), _cid(1, 2)]
    assert rows["r000:p006"]["ranks"] == [0, 1, 2, 2]
    assert rows["r000:p006"]["candidate_ids"] == [_cid(6, i) for i in (1, 0, 2, 3)]
    assert rows["r000:p006"]["weight"] == 0.5

    # A second export replaces the first (a save_to_disk directory may be overwritten).
    export_ranked(store, out, "trl")
    assert len(datasets.load_from_disk(str(out))) == 5


def test_rounds_select_and_default_to_every_ranked_round(store, tmp_path):
    _copy_as_round(store, 1)
    both = export_ranked(store, tmp_path / "both.parquet", "listwise")
    assert both.rounds == [0, 1] and both.groups_written == 6
    one = export_ranked(store, tmp_path / "one.parquet", "listwise", rounds=[1])
    ids = pq.read_table(tmp_path / "one.parquet").column("group_id").to_pylist()
    assert one.rounds == [1] and sorted(ids) == [f"r001:p{g:03d}" for g in sorted(WRITTEN)]
    with pytest.raises(FileNotFoundError, match=r"round\(s\) \[2\] .* not ranked"):
        export_ranked(store, tmp_path / "x.parquet", "trl", rounds=[2])


def test_bad_requests_say_what_to_fix(store, tmp_path):
    with pytest.raises(ValueError, match="expected a .parquet or .jsonl file"):
        export_ranked(store, tmp_path / "pairs.csv", "trl")
    with pytest.raises(ValueError, match="--pairs applies to --format trl only"):
        export_ranked(store, tmp_path / "x.parquet", "listwise", "all")
    taken = tmp_path / "notes"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a saved dataset"):
        export_ranked(store, taken, "trl")
    assert (taken / "mine.txt").read_text() == "keep me"
    unranked = tmp_path / "unranked"
    write_round(unranked, ["a"])
    with pytest.raises(FileNotFoundError, match="no ranked round"):
        export_ranked(unranked, tmp_path / "x.parquet", "trl")


def test_nothing_left_says_why(tmp_path):
    workdir = _ranked_round(tmp_path / "work")
    path = round_dir(workdir, 0) / "groups" / "consensus.parquet"
    pl.read_parquet(path).with_columns(pl.lit(0.0).alias("weight")).write_parquet(path)
    with pytest.raises(ValueError, match=r"nothing to export .* 7 groups read, left out: .*"
                                         r"weight 0 under the status policy \(ok\)': 3"):
        export_ranked(workdir, tmp_path / "x.parquet", "trl")
    assert not (tmp_path / "x.parquet").exists()


def test_cli_prints_the_result_and_one_line_errors(store, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["export", "--workdir", str(store), "--format", "trl", "--pairs", "all",
                 "--out", str(out), "--rounds", "0"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rows_written"] == 13 and result["groups_left_out"] == EXPECTED_LEFT_OUT
    assert "13 rows from 3 of 7 groups" in captured.err
    assert len(out.read_text().splitlines()) == 13

    assert main(["export", "--workdir", str(store), "--format", "listwise", "--pairs", "all",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("grpo export: error: --pairs applies to --format trl only "
                           "(listwise keeps whole groups)")
    assert main(["export", "--workdir", str(store), "--out", str(out), "--rounds", "zero"]) == 2
    assert "expected comma-separated round numbers" in capsys.readouterr().err


# --- trl itself, on a real ranked round ---------------------------------------------------


def _dpo_trainer(model_dir: Path, data, out: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=1,
                     learning_rate=1e-4, report_to=[], save_strategy="no", use_cpu=True,
                     bf16=False, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                      ref_model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                      train_dataset=data, processing_class=AutoTokenizer.from_pretrained(
                          model_dir))


def _stored_prompt_ids(workdir: Path) -> dict[str, list[int]]:
    df = pl.read_parquet(table_files(workdir, "prompts")[0])
    return dict(zip(df["prompt_id"], df["prompt_token_ids"].to_list(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("text", [False, True], ids=["conversational", "text"])
def test_trl_dpo_trainer_takes_the_export_as_it_is(ranked_store, demo_model_dir, tmp_path,
                                                   text):
    """The exported file goes into DPOTrainer unchanged (no column renamed or dropped by
    hand), and trl's own tokenisation of each prompt gives the ids the policy sampled
    from: the export carries the prompt the policy saw, in either layout."""
    import math

    workdir = copy_store(ranked_store, tmp_path / "store")
    out = tmp_path / "pairs.parquet"
    result = export_ranked(workdir, out, "trl", "best_worst", text=text)
    assert result.rows_written > 0
    if text:
        assert result.text_prompts_not_exact == 0
    data = datasets.load_dataset("parquet", data_files=str(out), split="train")
    trainer = _dpo_trainer(demo_model_dir, data, tmp_path / "trl")

    stored = _stored_prompt_ids(workdir)
    processed = trainer.train_dataset
    for i in range(len(data)):
        assert processed[i]["prompt_ids"] == stored[data[i]["prompt_id"]]
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = trainer.train().metrics
    assert trainer.state.global_step == 1 and math.isfinite(metrics["train_loss"])
    assert any((a != b.detach()).any() for a, b in zip(before, trainer.model.parameters(),
                                                       strict=True))
