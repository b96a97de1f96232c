"""The trainer on a real ranked round (vLLM-generated, verifier-ranked), on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.config import LOSS_NAMES, load_config
from tests.conftest import cli_set_args, copy_store, small_overrides
from trainers.data import (
    collate,
    from_hf_dataset,
    load_ranked_groups,
    to_hf_dataset,
    tokenize_groups,
)
from trainers.logprobs import group_logps
from trainers.loop import latest_checkpoint, train
from trainers.losses import LossType, groupwise_loss

pytestmark = pytest.mark.slow


def test_loss_names_match_the_enum():
    assert list(LOSS_NAMES) == [t.value for t in LossType]


def _dataset_loss(model_dir, ref_dir, workdir, cfg) -> float:
    """Mean training loss over every ranked group, evaluated with the given model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    groups = tokenize_groups(load_ranked_groups(workdir, [0]), tok.eos_token_id)
    batch, ranks, weights = collate(groups, tok.pad_token_id)
    with torch.no_grad():
        pol = group_logps(AutoModelForCausalLM.from_pretrained(model_dir), batch)
        ref = group_logps(AutoModelForCausalLM.from_pretrained(ref_dir), batch)
    losses, _ = groupwise_loss(cfg.train.loss, pol, ref, ranks, cfg.train.beta, weights)
    return float(losses.mean())


def test_training_lowers_the_loss_and_reuses_the_reference_cache(ranked_store, tmp_path,
                                                                 demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "w")
    cfg = load_config(overrides=small_overrides(demo_model_dir, **{"train.epochs": 3}))
    out = workdir / "models" / "trained"
    result = train(cfg, workdir, [0], demo_model_dir, demo_model_dir, out, show_progress=False)
    assert result.steps > 0 and not result.reference_cache_hit
    before = _dataset_loss(demo_model_dir, demo_model_dir, workdir, cfg)
    after = _dataset_loss(out, demo_model_dir, workdir, cfg)
    assert after < before - 0.1, (before, after)
    # A normal HF directory with the resolved config beside it.
    assert (out / "config.json").is_file() and (out / "train.config.toml").is_file()
    metrics = [json.loads(x) for x in
               (out.parent / "trained.checkpoints" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, result.steps + 1))
    assert result.world_size == 1 and result.groups_per_rank == [result.groups]
    assert {"loss", "reward_margin", "rank_acc", "kl_estimate", "lr"} <= set(metrics[-1])
    # Same model and data: the reference log-probs come from the Parquet cache.
    again = train(cfg, workdir, [0], demo_model_dir, demo_model_dir, workdir / "models" / "t2",
                  show_progress=False)
    assert again.reference_cache_hit and again.reference_cache == result.reference_cache
    # The trained model is a policy vLLM can serve for the next round.
    from flows.generate import generation_flow

    summary = generation_flow(str(workdir), None, 1,
                              small_overrides(demo_model_dir, **{"policy.model": str(out)}),
                              show_progress=False)
    assert summary["candidates_in_round"] == 24 * 4


def test_reference_free_trains_without_a_cache(ranked_store, tmp_path, demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "w")
    cfg = load_config(overrides={"train.reference_free": True, "train.epochs": 1,
                                 "train.loss": "lipo_lambda"})
    result = train(cfg, workdir, [0], demo_model_dir, demo_model_dir,
                   workdir / "models" / "free", show_progress=False)
    assert result.reference_cache is None and result.steps > 0
    assert not list((workdir / "cache").glob("ref_logps-*"))


def test_hf_dataset_round_trip(ranked_store):
    groups = load_ranked_groups(ranked_store, [0])
    assert groups and all(len(g.ranks) == 4 for g in groups)
    assert all(g.weight > 0 and len(set(g.ranks) - {-1}) >= 2 for g in groups)
    assert from_hf_dataset(to_hf_dataset(groups)) == groups


def _train_argv(workdir, demo_model_dir, output):
    overrides = small_overrides(demo_model_dir, **{
        "train.epochs": 30, "train.groups_per_batch": 2, "train.checkpoint_every": 10})
    return [sys.executable, "-m", "flows.cli", "train", "--workdir", str(workdir),
            "--output", str(output), *cli_set_args(overrides)]


def _metrics(output):
    path = output.with_name(output.name + ".checkpoints") / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(ranked_store, tmp_path,
                                                             demo_model_dir):
    workdir = copy_store(ranked_store, tmp_path / "w")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    straight = workdir / "models" / "straight"
    done = subprocess.run(_train_argv(workdir, demo_model_dir, straight), env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _metrics(straight)

    killed = workdir / "models" / "killed"
    argv = _train_argv(workdir, demo_model_dir, killed)
    proc = subprocess.Popen(argv, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(_metrics(killed)) < 37:
        assert proc.poll() is None, "training finished before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_seen = len(_metrics(killed))
    assert 37 <= steps_seen < len(expected), "the kill must land mid-run"
    assert not killed.exists(), "no final model from a killed run"
    ckpt = latest_checkpoint(killed.with_name("killed.checkpoints"))
    assert ckpt is not None and int(ckpt.name.split("-")[1]) % 10 == 0

    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((killed.with_name("killed.checkpoints") / "result.json").read_text())
    assert result["resumed_from_step"] >= 30
    got = _metrics(killed)
    assert [m["step"] for m in got] == [m["step"] for m in expected]
    for a, b in zip(got, expected, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        assert a["rank_acc"] == pytest.approx(b["rank_acc"], abs=1e-5, nan_ok=True)


def _tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_tracking_matches_metrics_jsonl(ranked_store, tmp_path, demo_model_dir):
    from trainers.tracking import EVAL_RUN, log_round_evaluation

    workdir = copy_store(ranked_store, tmp_path / "w")
    cfg = load_config(overrides=small_overrides(demo_model_dir, **{
        "train.epochs": 1, "train.report_to": "tensorboard",
        "train.tracking_dir": str(tmp_path / "tb")}))
    out = workdir / "models" / "tracked"
    train(cfg, workdir, [0], demo_model_dir, demo_model_dir, out, show_progress=False)
    rows = [json.loads(x) for x in
            (out.with_name("tracked.checkpoints") / "metrics.jsonl").read_text().splitlines()]
    scalars = _tensorboard_scalars(tmp_path / "tb" / "tracked")
    for key in ("loss", "reward_margin", "rank_acc", "kl_estimate", "lr", "epoch"):
        want = [(r["step"], r[key]) for r in rows if r[key] is not None]
        got = scalars[key]
        assert [s for s, _ in got] == [s for s, _ in want], key
        for (_, a), (_, b) in zip(got, want, strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-7), key  # TensorBoard keeps float32
    # The loop's per-round evaluations go to their own run, x-axis = round.
    for r, gold in ((0, 0.5), (1, 0.625)):
        log_round_evaluation(cfg, workdir, r, {"gold_score": gold, "kl_to_base": 0.1 * r,
                                               "overoptimised": False})
    evals = _tensorboard_scalars(tmp_path / "tb" / EVAL_RUN)
    assert evals["gold_score"] == [(0, 0.5), (1, 0.625)]
