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

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.generate import generate_shard_task
from flows.judge import judge_local_task, open_llm_judge, reward_model_dirs
from pipeline import generation
from pipeline.config import Config, ConfigError, load_config
from pipeline.fleet import Lazy, fleet_log, run_claimed
from pipeline.fleet_jobs import JudgeSpec, generation_jobs, judging_jobs
from pipeline.judging import stage
from pipeline.judging.reward_model import RewardModelScorer, combine_scores
from pipeline.judging.verifier import VerifierJudge
from pipeline.leases import new_owner_id

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
                         overrides: dict | None = None, policy_path: str | None = None) -> dict:
    """One worker's share of generating round ``round_``."""
    cfg = load_config(config_path, overrides)
    if policy_path:
        cfg.policy.model = policy_path
    wd, round_ = Path(workdir), _shared_round(round_)
    model = cfg.require_policy(wd)
    owner = new_owner_id()
    sampler = Lazy(lambda: generation.VLLMGroupSampler(model, cfg))
    try:
        jobs = generation_jobs(wd, cfg, round_, sampler, run_shard=generate_shard_task)
        report = run_claimed(jobs, owner, cfg.generation.lease_ttl_s,
                             log=fleet_log(wd, round_, "generate", owner))
    finally:
        if sampler.started:
            sampler.get().close()
    return {"round": round_, "shards": len(jobs), "engine_started": sampler.started,
            **report.summary()}


@task(name="judge-shard-llm", cache_policy=NO_CACHE)
def judge_journaled_task(workdir: Path, round_: int, shard: Path, source: str, judge):
    return stage.judge_shard_journaled(workdir, round_, shard, source, judge)


def judge_specs(cfg: Config, wd: Path, stack: contextlib.ExitStack) -> list[JudgeSpec]:
    """The configured sources, each started on first use (models loaded, the embedded LLM
    judge's server started until ``stack`` closes)."""
    sources, specs = cfg.judging.sources, []
    if "verifier" in sources:
        verifier = VerifierJudge(cfg.task.name)
        specs.append(JudgeSpec(verifier.source, Lazy(lambda: verifier.judge)))
    if "reward_model" in sources:
        rms = reward_model_dirs(cfg, wd)  # a missing model fails before any work
        scorers = Lazy(lambda: [RewardModelScorer(path, name, cfg.judging.batch_size)
                                for name, path in rms])
        for i, (name, _) in enumerate(rms):
            specs.append(JudgeSpec(f"rm:{name}", Lazy(lambda i=i: scorers.get()[i].judge)))
        if len(rms) > 1:
            how = cfg.judging.combine
            specs.append(JudgeSpec(f"rm-ensemble:{how}", Lazy(lambda: lambda groups: (
                combine_scores([s.judge(groups) for s in scorers.get()], how)))))
    if "llm" in sources:
        specs.append(JudgeSpec(f"llm:{cfg.llm_judge.name}",
                               Lazy(lambda: open_llm_judge(cfg, wd, stack)), journaled=True))
    return specs


@flow(name="judge-worker", validate_parameters=False)
def judge_worker_flow(workdir: str, config_path: str | None = None, round_: int = 0,
                      overrides: dict | None = None) -> dict:
    """One worker's share of judging round ``round_``: one job per (shard, source)."""
    cfg = load_config(config_path, overrides)
    wd, round_ = Path(workdir), _shared_round(round_)
    if not stage.candidate_shards(wd, round_):
        raise ConfigError(f"round {round_}: no candidates in {wd}; run the generation first")
    owner = new_owner_id()
    with contextlib.ExitStack() as stack:
        jobs = judging_jobs(wd, round_, judge_specs(cfg, wd, stack),
                            judge_local=judge_local_task, judge_journaled=judge_journaled_task)
        report = run_claimed(jobs, owner, cfg.generation.lease_ttl_s,
                             log=fleet_log(wd, round_, "judge", owner))
    return {"round": round_, "jobs": len(jobs), **report.summary()}


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
