"""Prefect flow: sample groups for one round, one task per shard.

The flow owns the engine (started once, only if a shard is left to do) and hands it to
each shard task. Prefect's cache is off on purpose: the shard files are the record of what
finished, so a restarted run skips exactly the shards whose files exist.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline import generation
from pipeline.atomic import sweep_temp_files, write_text_atomic
from pipeline.catalog import rebuild
from pipeline.config import load_config
from pipeline.progress import progress_bar
from pipeline.store import next_round, round_dir


@task(name="generate-shard", cache_policy=NO_CACHE, retries=0)
def generate_shard_task(sampler, workdir: Path, round_: int, shard: int, prompts,
                        config_hash: str) -> generation.ShardResult:
    return generation.generate_shard(sampler, workdir, round_, shard, prompts, config_hash)


@flow(name="generate", validate_parameters=False)
def generation_flow(workdir: str, config_path: str | None = None, round_: int = 0,
                    overrides: dict | None = None, policy_path: str | None = None,
                    show_progress: bool = True) -> dict:
    """Generate round ``round_`` (-1: the next new round); ``policy_path`` overrides the
    config's policy (the loop passes the previous round's model)."""
    cfg = load_config(config_path, overrides)
    if policy_path:
        cfg.policy.model = policy_path
    workdir_p = Path(workdir)
    if round_ < 0:
        round_ = next_round(workdir_p)
    summary = run_generation(workdir_p, cfg, round_, show_progress=show_progress)
    summary["catalog_rows"] = rebuild(workdir_p)
    return summary


def run_generation(workdir_p: Path, cfg, round_: int, sampler=None,
                   show_progress: bool = True) -> dict:
    """The body of the flow, callable with an engine the caller already started (the loop
    shares one engine between evaluation and generation)."""
    model = cfg.require_policy(workdir_p)
    config_hash = cfg.fingerprint(*generation.GENERATION_SECTIONS)
    generation.check_round_config(workdir_p, round_, config_hash)
    sweep_temp_files(round_dir(workdir_p, round_))

    train = generation.write_round_prompts(workdir_p, cfg, round_)
    write_text_atomic(cfg.to_toml(), round_dir(workdir_p, round_) / "generate.config.toml")
    shards = generation.plan_shards(train, cfg.generation.shard_size)
    todo = generation.pending(workdir_p, round_, shards, config_hash)

    results: list[generation.ShardResult] = []
    startup = 0.0
    if todo:
        own = sampler is None
        if own:
            sampler = generation.VLLMGroupSampler(model, cfg)
            startup = sampler.startup_seconds
        done_prompts = sum(len(s) for i, s in enumerate(shards) if i not in todo)
        tokens = seconds = 0.0
        with progress_bar(show_progress) as bar:
            job = bar.add_task(f"round {round_}: generating", total=len(train),
                               completed=done_prompts)
            for i in todo:
                res = generate_shard_task(sampler, workdir_p, round_, i, shards[i], config_hash)
                results.append(res)
                tokens += res.tokens
                seconds += res.seconds
                bar.update(job, advance=res.prompts,
                           description=f"round {round_}: generating "
                                       f"{tokens / max(seconds, 1e-9):,.0f} tok/s")
        if own:
            sampler.close()
    return {
        "round": round_, "config_hash": config_hash, "shards": len(shards),
        "shards_generated": len(results), "shards_skipped": len(shards) - len(results),
        "candidates_in_round": _count_round(workdir_p, round_, config_hash),
        "engine_startup_s": round(startup, 1),
        "generated_tokens": sum(r.tokens for r in results),
        "shard_results": [asdict(r) | {"path": str(r.path)} for r in results],
    }


def _count_round(workdir: Path, round_: int, config_hash: str) -> int:
    import pyarrow.parquet as pq

    files = (round_dir(workdir, round_) / "candidates").glob(f"shard-*-{config_hash}.parquet")
    return sum(pq.read_metadata(f).num_rows for f in files)
