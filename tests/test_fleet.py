"""A fleet for real: a Prefect server on 127.0.0.1, one process work pool, two workers, the
worker flows deployed from source; one generation round of the demo model spread over both
workers, one of them SIGKILLed in the middle of a shard; then a judging round over two
workers. Every (prompt, candidate) and every judgment must exist exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.fleet import read_fleet_logs
from pipeline.leases import LEASE_MARK, read_lease
from pipeline.store import round_dir, table_files
from tests.conftest import cli_set_args, small_overrides

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "grpo-test"
TTL_S = 6.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, api_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_CLI_PROMPT="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGCONT)  # a stalled process would not see SIGTERM
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect API server (SQLite under a temp PREFECT_HOME), once per session."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=_env(home), cwd=home,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the Prefect server did not come up in 120 s"
            time.sleep(0.5)
        yield url, home
    finally:
        _stop(server)
        log.close()


class Fleet:
    """Workers of one pool, each in its own process group (the worker, the flow-run process
    it starts, and that run's vLLM engine processes)."""

    def __init__(self, url: str, home: Path, logs: Path) -> None:
        self.url, self.home, self.logs = url, home, logs
        self.workers: dict[str, subprocess.Popen] = {}

    def cli(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT,
                              env=_env(self.home, self.url), capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def start_worker(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - the child keeps it
        self.workers[name] = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1",
             "--install-policy", "never"],
            cwd=ROOT, env=_env(self.home, self.url), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def worker_of(self, pid: int) -> str | None:
        """The worker whose process group holds ``pid`` (a flow-run process)."""
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return None
        return next((n for n, p in self.workers.items() if p.pid == group), None)

    def run_states(self, run_ids: list[str]) -> dict[str, str]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.url}), \
                get_client(sync_client=True) as client:
            return {rid: client.read_flow_run(rid).state.name for rid in run_ids}

    def wait_until(self, what: str, ok, timeout: float = 600, every: float = 1.0):
        deadline = time.time() + timeout
        while not (result := ok()):
            for name, p in self.workers.items():
                if p.poll() is not None and p.returncode != -signal.SIGKILL:
                    pytest.fail(f"worker {name} exited: "
                                f"{(self.logs / f'{name}.log').read_text()[-3000:]}")
            if time.time() > deadline:
                tails = {n: (self.logs / f"{n}.log").read_text()[-2000:] for n in self.workers}
                pytest.fail(f"timed out waiting for {what}; worker logs: {tails}")
            time.sleep(every)
        return result

    def stop(self) -> None:
        for p in self.workers.values():
            _stop(p)


@pytest.fixture
def fleet(prefect_server, tmp_path):
    url, home = prefect_server
    f = Fleet(url, home, tmp_path)
    yield f
    f.stop()


def _held_leases(shard_dir: Path) -> list[tuple[Path, dict]]:
    """(output, lease content) of every lease file that reads back."""
    out = []
    for path in shard_dir.glob(f"*{LEASE_MARK}*"):
        name, _, slot = path.name.rpartition(LEASE_MARK)
        if not slot.isdigit():
            continue  # a heartbeat's temporary file
        try:
            out.append((path.with_name(name), json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return out


def test_two_workers_share_a_round_and_survive_a_killed_worker(fleet, demo_model_dir,
                                                               tmp_path):
    workdir = tmp_path / "run"
    # Enough shards that both workers still have some left once both are up.
    n_prompts, shard_size, k = 1024, 64, 8  # the session prompts file holds 1024
    n_shards = n_prompts // shard_size
    overrides = small_overrides(demo_model_dir, **{
        "prompts.n_train_per_round": n_prompts, "generation.shard_size": shard_size,
        "generation.k": k, "generation.lease_ttl_s": TTL_S,
        "judging.sources": '["verifier"]'})
    sets = cli_set_args(overrides)

    subprocess.run([PREFECT, "work-pool", "create", POOL, "--type", "process"], check=True,
                   env=_env(fleet.home, fleet.url), capture_output=True, timeout=60)
    deployed = json.loads(fleet.cli("fleet", "deploy", "--workdir", str(workdir),
                                    "--pool", POOL, *sets))
    assert set(deployed) == {"generate-worker/fleet", "judge-worker/fleet"}
    fleet.start_worker("w1")
    fleet.start_worker("w2")
    runs = json.loads(fleet.cli("fleet", "submit", "generate", "--round", "0", "--runs", "2"))
    assert len(runs) == 2

    # Watch the leases: once both workers have held one and one of them has finished a
    # shard and is in the middle of the next, SIGKILL that worker's whole process group.
    # The worker whose engine is up first could finish the whole round before the other's
    # engine is up (it did, 16 shards to none, once float32 made a shard take ~0.3 s): so
    # a worker that claims a shard while the other has claimed none is stalled (SIGSTOP of
    # its flow-run process, as a VM pause or a swap storm stalls one) right after the
    # claim, far from its write, and continued once the other holds a lease. Its lease
    # expires meanwhile: the other may take that shard over, and then the stalled one must
    # not write it.
    shard_dir = round_dir(workdir, 0) / "candidates"
    holders: set[str] = set()
    victim: dict = {}
    stalled: dict = {}

    def kill_mid_shard() -> bool:
        done_by = Counter(e["owner"] for e in read_fleet_logs(workdir, 0, "generate")
                          if e["event"] == "done")
        if sum(done_by.values()) == n_shards:
            pytest.fail(f"the round finished before a kill could land: {done_by}")
        current: dict[Path, dict] = {}  # an output's highest lease: a stalled owner's
        for output, lease in _held_leases(shard_dir):  # earlier one no longer counts
            if lease["slot"] >= current.get(output, {"slot": -1})["slot"]:
                current[output] = lease
        held = [(output, lease, name) for output, lease in current.items()
                if not output.exists() and (name := fleet.worker_of(lease["pid"]))]
        holders.update(name for _, _, name in held)
        if stalled and "continued_at" not in stalled:
            if any(name != stalled["name"] for _, _, name in held):
                os.kill(stalled["pid"], signal.SIGCONT)
                stalled["continued_at"] = time.time()
            return False
        if not stalled and len(holders) == 1:
            for output, lease, name in held:
                if time.time() - lease["acquired_at"] < 0.1:
                    os.kill(lease["pid"], signal.SIGSTOP)
                    stalled.update(name=name, pid=lease["pid"], owner=lease["owner"],
                                   output=output, at=time.time())
                    return False
        for output, lease, name in held:
            # Not the stalled shard: its worker's lease may have lapsed while it was stopped,
            # and the checks below want that worker alive to see the loss.
            if len(holders) == 2 and done_by[lease["owner"]] >= 1 and \
                    output != stalled.get("output"):
                os.killpg(fleet.workers[name].pid, signal.SIGKILL)
                fleet.workers[name].wait()
                victim.update(name=name, owner=lease["owner"], output=output,
                              lease=read_lease(output, lease["slot"], TTL_S))
                return True
        return False

    fleet.wait_until("both workers generating, then a kill mid-shard", kill_mid_shard,
                     every=0.02)
    assert not victim["output"].exists(), "the kill must land before the shard is written"

    # The other worker finishes the round, taking the dead worker's shard over.
    states = fleet.wait_until("the surviving run to complete", lambda: (
        s if "Completed" in (s := fleet.run_states(runs)).values() else None))
    assert sorted(states.values()).count("Completed") == 1, states

    files = sorted(shard_dir.glob("shard-*.parquet"))
    assert len(files) == n_shards
    rows = pq.read_table(table_files(workdir, "candidates")).to_pylist()
    keys = Counter((r["prompt_id"], r["candidate_idx"]) for r in rows)
    assert len(keys) == n_prompts * k and set(keys.values()) == {1}
    assert not list(shard_dir.glob(f"*{LEASE_MARK}*")) and not list(shard_dir.glob("*.tmp-*"))

    events = read_fleet_logs(workdir, 0, "generate")
    done = [e for e in events if e["event"] == "done"]
    assert Counter(e["output"] for e in done) == Counter(f.name for f in files), \
        "every shard written exactly once"
    owners = {e["owner"] for e in done}
    assert len(owners) == 2 and victim["owner"] in owners, "both workers generated shards"
    [takeover] = [e for e in events if e["event"] == "claimed"
                  and e["output"] == victim["output"].name and e["owner"] != victim["owner"]]
    assert takeover["took_over_from"] == victim["owner"]
    assert takeover["previous_expires_at"] == victim["lease"].expires_at
    assert takeover["at"] > victim["lease"].expires_at, "taken over only after it expired"
    assert [e["owner"] for e in done if e["output"] == victim["output"].name] == \
        [takeover["owner"]]
    if stalled:  # the stalled worker wrote its shard only if nobody had taken it over
        print(f"stalled {stalled['name']} for {stalled['continued_at'] - stalled['at']:.1f} s")
        # In lease-slot order: a claim is logged just after its lease is taken, and the
        # stall may land in between, so log times need not follow the slots.
        claims = [e["owner"] for e in sorted(
            (e for e in events if e["event"] == "claimed"
             and e["output"] == stalled["output"].name), key=lambda e: e["slot"])]
        assert claims[0] == stalled["owner"]
        assert [e["owner"] for e in done if e["output"] == stalled["output"].name] == \
            [claims[-1]], "written once, by its last claimer"
        if len(claims) > 1:
            assert {"owner": stalled["owner"], "output": stalled["output"].name} in [
                {"owner": e["owner"], "output": e["output"]} for e in events
                if e["event"] == "lost"], "the stalled worker found its lease lost"

    # A late worker finds nothing left to claim: it returns without starting an engine.
    late = json.loads(fleet.cli("fleet", "work", "generate", "--workdir", str(workdir), *sets))
    assert late["engine_started"] is False and late["fleet"]["done"] == 0
    assert late["fleet"]["finished_elsewhere"] == n_shards

    # Judging the round through the same pool: a fresh worker replaces the dead one.
    fleet.start_worker("w3")
    judge_runs = json.loads(fleet.cli("fleet", "submit", "judge", "--round", "0",
                                      "--runs", "2"))
    fleet.wait_until("both judge runs to complete", lambda: set(
        fleet.run_states(judge_runs).values()) == {"Completed"})
    judged = pq.read_table(table_files(workdir, "judgments")).to_pylist()
    assert Counter(r["candidate_id"] for r in judged) == Counter(
        r["candidate_id"] for r in rows), "every candidate judged exactly once"
    assert {r["source"] for r in judged} == {"verifier:sort_digits"}
    judge_done = [e for e in read_fleet_logs(workdir, 0, "judge") if e["event"] == "done"]
    assert len(judge_done) == n_shards == len({e["output"] for e in judge_done})
