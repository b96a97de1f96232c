"""Prefect flows for a fleet of workers sharing one round (see README, A fleet of workers).

``generate-worker`` and ``judge-worker`` each run one worker's share: every pending shard
is claimed by lease (``pipeline.fleet``), so any number of flow runs, on any number of
machines sharing the workdir, can work on the same round at once; none is done twice and
the shard of a worker that dies is taken over once its lease expires. The engine (or judge)
starts only if a shard is left to claim. Deployed from source on a process work pool, each
run is picked up by one Prefect worker; a worker started with ``--limit 1`` runs one engine.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from prefect import flow

from flows.generate import run_generation
from flows.judge import judge_round
from pipeline.config import ConfigError, load_config
from pipeline.resolve import resolve_policy
from pipeline.rounds import mark_stage, policy_for_round

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = "fleet"
WORKER_FLOWS = {"generate": "generate-worker", "judge": "judge-worker"}


def _shared_round(round_: int) -> int:
    if round_ < 0:
        raise ConfigError("--round: workers of a fleet share one round; give its number "
                          "(a 'next round' could differ between workers)")
    return round_


@flow(name="generate-worker", validate_parameters=False)
def generate_worker_flow(workdir: str, config_path: str | None = None, round_: int = 0,
                         overrides: dict | None = None) -> dict:
    """One worker's share of generating round ``round_``: the same body as `grpo generate`
    (shards claimed by lease), sampled with the policy that round belongs to."""
    cfg = load_config(config_path, overrides)
    wd, round_ = Path(workdir), _shared_round(round_)
    policy = policy_for_round(wd, resolve_policy(cfg, wd), round_)
    summary = run_generation(wd, cfg, round_, policy, show_progress=False)
    summary.pop("shard_results")
    return summary


@flow(name="judge-worker", validate_parameters=False)
def judge_worker_flow(workdir: str, config_path: str | None = None, round_: int = 0,
                      overrides: dict | None = None) -> dict:
    """One worker's share of judging round ``round_``: the same body as `grpo judge`, one
    job per (shard, source), each claimed by lease."""
    cfg = load_config(config_path, overrides)
    wd, round_ = Path(workdir), _shared_round(round_)
    summary = judge_round(wd, cfg, round_, show_progress=False)
    if summary["complete"]:
        mark_stage(wd, round_, "judge", {"sources": summary["sources"]}, time.perf_counter())
    return summary


def deploy(pool: str, workdir: Path, config_path: str | None, overrides: dict,
           source: Path = REPO_ROOT) -> dict[str, str]:
    """Register both worker flows, from this source tree, on a process work pool. Every
    worker machine needs the code at the same path (or a shared checkout) and the workdir
    on shared storage at the same path."""
    params = {"workdir": str(Path(workdir).resolve()),
              "config_path": str(Path(config_path).resolve()) if config_path else None,
              "overrides": overrides}
    ids = {}
    # Prefect prints its table of deployments to stdout; the CLI's stdout is JSON.
    with contextlib.redirect_stdout(sys.stderr):
        for fn_name, flow_name in (("generate_worker_flow", WORKER_FLOWS["generate"]),
                                   ("judge_worker_flow", WORKER_FLOWS["judge"])):
            remote = flow.from_source(source=str(source),
                                      entrypoint=f"flows/fleet.py:{fn_name}")
            ids[f"{flow_name}/{DEPLOYMENT}"] = str(remote.deploy(
                name=DEPLOYMENT, work_pool_name=pool, parameters=params,
                tags=["grpo", "fleet"], print_next_steps=False,
                ignore_warnings=True))  # a process pool is the point, not a mistake
    return ids


def submit(stage_name: str, round_: int, runs: int) -> tuple[list[str], Path]:
    """Start ``runs`` worker runs of a stage on one round; each is picked up by a worker.
    Returns the run ids and the workdir the deployment works in."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    round_ = _shared_round(round_)
    name = f"{WORKER_FLOWS[stage_name]}/{DEPLOYMENT}"
    with get_client(sync_client=True) as client:
        workdir = Path(client.read_deployment_by_name(name).parameters["workdir"])
    ids = [str(run_deployment(name, parameters={"round_": round_}, timeout=0).id)
           for _ in range(runs)]
    return ids, workdir


def wait_for_runs(run_ids: list[str], timeout_s: float, poll_s: float = 2.0) -> dict[str, str]:
    """Poll the API until every run is final (or ``timeout_s``); run id -> state name."""
    from prefect.client.orchestration import get_client

    states: dict[str, str] = {}
    deadline = time.time() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(rid) for rid in run_ids]
            states = {str(r.id): r.state.name if r.state else "?" for r in runs}
            if all(r.state is not None and r.state.is_final() for r in runs):
                return states
            if time.time() > deadline:
                return states
            time.sleep(poll_s)
