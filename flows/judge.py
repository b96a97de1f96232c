"""Prefect flow: judge a round with every configured source, one task per (shard, source).

A judge endpoint that does not answer fails the flow before any work starts. The embedded
judge (``llm_judge.base_url = "embedded"``) is vLLM's OpenAI server on 127.0.0.1, started
once for the flow and stopped at its end.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline.catalog import rebuild
from pipeline.config import DEMO_POLICY, Config, ConfigError, load_config
from pipeline.judging import stage
from pipeline.judging.llm import JudgeClient, LLMJudge, RequestBudget
from pipeline.judging.reward_model import RewardModelScorer, combine_scores
from pipeline.judging.server import vllm_server
from pipeline.judging.verifier import VerifierJudge
from pipeline.progress import progress_bar
from pipeline.store import latest_round, round_dir


@task(name="judge-shard", cache_policy=NO_CACHE)
def judge_local_task(workdir: Path, round_: int, shard: Path, source: str, judge):
    return stage.judge_shard_at_once(workdir, round_, shard, source, judge)


@task(name="judge-shard-llm", cache_policy=NO_CACHE)
def judge_llm_task(workdir: Path, round_: int, shard: Path, judge: LLMJudge, on_group=None):
    return stage.judge_shard_journaled(workdir, round_, shard, judge.source, judge, on_group)


def reward_model_dirs(cfg: Config, workdir: Path) -> list[tuple[str, Path]]:
    out = []
    for spec in cfg.judging.reward_models:
        path = Path(workdir) / "models" / "demo-rm" if spec == "demo" else Path(spec).resolve()
        if not (path / "config.json").is_file():
            hint = ("run `grpo build-demo-model`" if spec == "demo"
                    else "point judging.reward_models at sequence-classification model dirs")
            raise ConfigError(f"judging.reward_models: no model at {path}; {hint}")
        out.append(("demo" if spec == "demo" else path.name, path))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"judging.reward_models: two models share a name ({names}); each "
                          "names a source rm:NAME after its directory, so give them distinct "
                          "directory names")
    return out


@contextlib.contextmanager
def judge_endpoint(cfg: Config, workdir: Path):
    """(base_url, model name) of the LLM judge; starts the embedded server if asked."""
    q = cfg.llm_judge
    if q.base_url != "embedded":
        yield q.base_url, q.model
        return
    model_dir = cfg.policy_path(workdir) if q.model == DEMO_POLICY else Path(q.model)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"llm_judge.model: no model directory at {model_dir} to serve")
    log = Path(workdir) / "logs" / "judge-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with vllm_server(model_dir, "embedded-judge", q.port, log) as url:
        yield url, "embedded-judge"


def open_llm_judge(cfg: Config, wd: Path, stack: contextlib.ExitStack) -> LLMJudge:
    """The LLM judge, its endpoint checked (and, if embedded, started until ``stack``
    closes)."""
    url, model = stack.enter_context(judge_endpoint(cfg, wd))
    budget = RequestBudget(cfg.llm_judge.max_requests)
    client = JudgeClient(cfg.llm_judge, url, model, budget)
    try:
        served = client.check_reachable()
    except Exception as err:  # noqa: BLE001 - any failure here means "fix the URL"
        raise ConfigError(f"llm_judge.base_url: {url} does not answer "
                          f"({type(err).__name__}: {err}); fix the URL or start "
                          "the server") from err
    if model not in served:
        raise ConfigError(f"llm_judge.model: {model!r} is not served at {url}; "
                          f"it serves {served}")
    return LLMJudge(cfg.llm_judge, client, seed=cfg.generation.seed)


@flow(name="judge", validate_parameters=False)
def judge_flow(workdir: str, config_path: str | None = None, round_: int = 0,
               overrides: dict | None = None, show_progress: bool = True) -> dict:
    cfg = load_config(config_path, overrides)
    wd = Path(workdir)
    round_ = latest_round(wd) if round_ < 0 else round_
    shards = stage.candidate_shards(wd, round_)
    if not shards:
        raise ConfigError(f"round {round_}: no candidates in {round_dir(wd, round_)}; "
                          "run `grpo generate` first")
    sources = cfg.judging.sources
    rms = reward_model_dirs(cfg, wd) if "reward_model" in sources else []
    results: list[stage.ShardJudgeResult] = []
    with contextlib.ExitStack() as stack:
        llm = open_llm_judge(cfg, wd, stack) if "llm" in sources else None
        if "verifier" in sources:
            judge = VerifierJudge(cfg.task.name)
            results += [judge_local_task(wd, round_, s, judge.source, judge.judge)
                        for s in shards]
        if rms:
            results += _judge_with_reward_models(cfg, wd, round_, shards, rms)
        if llm is not None:
            results += _judge_with_llm(wd, round_, shards, llm, show_progress)
            budget_used = llm.client.budget.used
    rows = rebuild(wd)
    summary: dict = {"round": round_, "catalog_rows": rows, "sources": {}}
    for r in results:
        s = summary["sources"].setdefault(r.source, {"shards": 0, "complete": 0, "groups": 0,
                                                     "groups_done": 0})
        s["shards"] += 1
        s["complete"] += r.complete
        s["groups"] += r.groups
        s["groups_done"] += r.groups_done
    if "llm" in sources:
        summary["llm_requests"] = budget_used
    return summary


def _judge_with_reward_models(cfg, wd, round_, shards, rms):
    scorers = [RewardModelScorer(path, name, cfg.judging.batch_size) for name, path in rms]
    how = cfg.judging.combine
    results = []
    for shard in shards:
        scored: dict[str, list[dict]] = {}  # each model scores a shard once, ensemble included

        def rows_of(scorer, groups, scored=scored):
            if scorer.source not in scored:
                scored[scorer.source] = scorer.judge(groups)
            return scored[scorer.source]

        for scorer in scorers:
            results.append(judge_local_task(wd, round_, shard, scorer.source,
                                            lambda groups, s=scorer: rows_of(s, groups)))
        if len(scorers) > 1:
            results.append(judge_local_task(
                wd, round_, shard, f"rm-ensemble:{how}",
                lambda groups: combine_scores([rows_of(s, groups) for s in scorers], how)))
    return results


def _judge_with_llm(wd, round_, shards, llm: LLMJudge, show_progress: bool):
    results = []
    with progress_bar(show_progress) as bar:
        job = bar.add_task(f"round {round_}: {llm.source}", total=None)
        for shard in shards:
            res = judge_llm_task(wd, round_, shard, llm,
                                 on_group=lambda: bar.update(job, advance=1))
            results.append(res)
            if not res.complete:  # the request cap is spent: the rest waits for a rerun
                break
    return results
