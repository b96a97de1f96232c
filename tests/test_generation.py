"""Generation with real vLLM on the CPU, through the Prefect flow."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipeline.catalog import connect_readonly, rebuild
from pipeline.config import ConfigError
from pipeline.store import round_dir, table_files
from tests.conftest import cli_set_args, small_disk, small_overrides
from tests.processes import session_processes

pytestmark = pytest.mark.slow


def _candidates(workdir):
    return pq.read_table(table_files(workdir, "candidates")).to_pylist()


def test_generate_round_with_vllm(tmp_path, demo_model_dir, prefect_harness):
    from flows.generate import generation_flow

    overrides = small_overrides(demo_model_dir)
    summary = generation_flow(str(tmp_path), None, 0, overrides, show_progress=False)
    assert summary["shards"] == 3 and summary["shards_generated"] == 3
    rows = _candidates(tmp_path)
    assert len(rows) == 24 * 4
    assert len({r["candidate_id"] for r in rows}) == len(rows)
    by_group: dict[str, list[int]] = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r["candidate_idx"])
    assert len(by_group) == 24
    assert all(sorted(v) == [0, 1, 2, 3] for v in by_group.values())
    assert {r["finish_reason"] for r in rows} <= {"stop", "length"}
    assert all(r["logprob"] is not None and r["logprob"] <= 0 for r in rows)
    assert all(r["n_tokens"] >= 1 for r in rows)
    # The imperfect demo policy still answers its task most of the time.
    digits = sum(r["text"].isdigit() for r in rows) / len(rows)
    assert digits > 0.5
    # The catalog sees the same rows, and a rebuild gives the same rows again.
    con = connect_readonly(tmp_path)
    first = con.execute("SELECT * FROM candidates ORDER BY candidate_id").fetchall()
    con.close()
    rebuild(tmp_path)
    con = connect_readonly(tmp_path)
    assert con.execute("SELECT * FROM candidates ORDER BY candidate_id").fetchall() == first
    con.close()
    assert (round_dir(tmp_path, 0) / "generate.config.toml").is_file()

    # A second run does no work and changes no file.
    mtimes = {p: p.stat().st_mtime_ns for p in table_files(tmp_path, "candidates")}
    again = generation_flow(str(tmp_path), None, 0, overrides, show_progress=False)
    assert again["shards_generated"] == 0 and again["shards_skipped"] == 3
    assert {p: p.stat().st_mtime_ns for p in table_files(tmp_path, "candidates")} == mtimes

    # Engine and memory settings, or another spelling of the model's path, are the same
    # samples: the round resumes instead of refusing.
    respelled = {**overrides, "policy.model": f"{demo_model_dir}/../{demo_model_dir.name}/",
                 "generation.max_num_seqs": 64, "generation.kv_cache_gib": 2.0,
                 "generation.enforce_eager": False}
    same = generation_flow(str(tmp_path), None, 0, respelled, show_progress=False)
    assert same["config_hash"] == summary["config_hash"] and same["shards_generated"] == 0

    # Other samples must not be mixed into the same round.
    with pytest.raises(ConfigError, match="other samples"):
        generation_flow(str(tmp_path), None, 0, {**overrides, "generation.k": 3},
                        show_progress=False)


def test_sigkill_mid_generation_then_resume(tmp_path, demo_model_dir):
    """Kill `grpo generate` (and its engine) after some shards; the rerun finishes the rest
    and every (prompt, candidate) exists exactly once."""
    overrides = small_overrides(demo_model_dir, **{"prompts.n_train_per_round": 96,
                                                   "generation.shard_size": 3})
    n_shards = 32
    argv = [sys.executable, "-m", "flows.cli", "generate", "--workdir", str(tmp_path),
            *cli_set_args(overrides)]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    shard_dir = round_dir(tmp_path, 0) / "candidates"

    log = tmp_path / "killed.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shard_dir.glob("*.parquet"))) < 2:
        assert proc.poll() is None, f"generate exited early: {log.read_text()[-2000:]}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its engine process together
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    assert 2 <= len(done_before) < n_shards, "the kill must land mid-run"

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    files = sorted(shard_dir.glob("*.parquet"))
    assert len(files) == n_shards
    # Shards finished before the kill were skipped, not rewritten.
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
    rows = _candidates(tmp_path)
    keys = [(r["prompt_id"], r["candidate_idx"]) for r in rows]
    assert len(keys) == 96 * 4 == len(set(keys))
    assert sum(pq.read_metadata(f).num_rows for f in files) == len(rows)
    assert not list(shard_dir.glob("*.tmp-*"))


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_mid_generation_leaves_no_process_behind(tmp_path, demo_model_dir, to):
    """SIGTERM to `grpo generate` alone (Kubernetes, `timeout`) or to its whole process
    group (Slurm, systemd: the engine and Prefect's temporary server get it at the same
    time): the command exits with 143 and leaves no process of its own running with its
    memory; the shards written so far stay readable and no temporary file is left."""
    overrides = small_overrides(demo_model_dir, **{"prompts.n_train_per_round": 96,
                                                   "generation.shard_size": 3})
    argv = [sys.executable, "-m", "flows.cli", "generate", "--workdir", str(tmp_path),
            *cli_set_args(overrides)]
    # No PREFECT_API_URL: the command starts its own temporary Prefect server.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / ".prefect")
    if to == "group":
        # The temporary server stops with the group, and Prefect's client retries its crash
        # report with backoff, by default 5 times (80 s from the signal to the exit here):
        # 2 take the same path.
        env["PREFECT_CLIENT_MAX_RETRIES"] = "2"
    shard_dir = round_dir(tmp_path, 0) / "candidates"
    log = tmp_path / "terminated.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(shard_dir.glob("*.parquet"))) < 2:
            assert proc.poll() is None, f"generate exited early: {log.read_text()[-2000:]}"
            time.sleep(0.02)
        children = session_processes(proc.pid)
        assert any("prefect" in c for c in children), children  # the temporary server
        if to == "process":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        deadline = time.time() + 30
        while time.time() < deadline and session_processes(proc.pid):
            time.sleep(0.2)
        assert session_processes(proc.pid) == [], log.read_text()[-3000:]
        for shard in shard_dir.glob("*.parquet"):
            assert pq.read_table(shard).num_rows > 0
        assert not list(shard_dir.glob("*.tmp-*"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_full_disk_mid_generation_stops_cleanly_then_resumes(tmp_path, demo_model_dir):
    """The disk holding the workdir fills up mid-round: `grpo generate` stops with exit 1
    and a message saying what to do (not a traceback with the lease's own write error on
    top), leaves no temporary file and no process behind, and keeps the finished shards;
    once space is freed the same command finishes the round, each candidate once."""
    workdir = tmp_path / "disk"
    overrides = small_overrides(demo_model_dir, **{"prompts.n_train_per_round": 96,
                                                   "generation.shard_size": 3,
                                                   "generation.lease_ttl_s": 10})
    argv = [sys.executable, "-m", "flows.cli", "generate", "--workdir", str(workdir),
            *cli_set_args(overrides)]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")}
    shard_dir = round_dir(workdir, 0) / "candidates"
    # 120 KiB: the prompt set and a few of the 32 shards fit, not all.
    with small_disk(workdir, "120k") as resize:
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-2:]
        assert any(line.startswith(f"grpo generate: error: no space left on the device "
                                   f"holding {workdir}") and "rerun the same command" in line
                   for line in last), err[-3000:]
        # Its children may still be exiting (seen once: one with its cmdline already gone).
        deadline = time.time() + 30
        while time.time() < deadline and session_processes(proc.pid):
            time.sleep(0.2)
        assert session_processes(proc.pid) == []
        assert not list(workdir.rglob("*.tmp-*")) and not list(workdir.rglob("*.renew-*"))
        done_before = {p: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
        assert 1 <= len(done_before) < 32, "the disk must fill mid-round"
        for shard in done_before:
            assert pq.read_table(shard).num_rows == 3 * 4

        resize("8m")
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert len(list(shard_dir.glob("*.parquet"))) == 32
        assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
        keys = [(r["prompt_id"], r["candidate_idx"]) for r in _candidates(workdir)]
        assert len(keys) == 96 * 4 == len(set(keys))
