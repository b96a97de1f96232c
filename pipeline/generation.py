"""Sample groups of k candidates per prompt with vLLM, one resumable shard at a time.

One engine serves a whole stage (start-up costs 15-40 s); shards are the unit of saved
work. Each prompt gets its own seed derived from (generation seed, round, prompt id), so a
shard regenerated after a crash holds exactly what the first attempt would have written,
whatever batch it lands in.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.config import Config, ConfigError
from pipeline.judging.injection import detect as detect_injection
from pipeline.schema import CANDIDATES, PROMPTS
from pipeline.store import candidate_id, group_id, prompts_path, round_dir, shard_path
from pipeline.tasks import TaskPrompt, get_task

GENERATION_SECTIONS = ("task", "policy", "generation")


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken torch simply means "no GPU here"
        return False


def configure_cpu_engine(kv_cache_gib: float) -> None:
    """vLLM-on-CPU settings measured on 2-core machines (see README, Performance)."""
    if has_cuda():
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(kv_cache_gib))))
    # The default binding reserves a core for the engine: on 2 cores that costs ~40%.
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # Spawn, not fork: the caller may hold threads (Prefect, rich) that fork would copy.
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def prompt_seed(base_seed: int, round_: int, prompt_id: str) -> int:
    digest = hashlib.blake2b(f"{base_seed}:{round_}:{prompt_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % (2**31 - 1)


def round_prompts(cfg: Config, round_: int) -> tuple[list[TaskPrompt], list[TaskPrompt]]:
    """(train, heldout) prompts of a round: fresh train prompts each round, fixed held-out."""
    task = get_task(cfg.task.name)
    train = task.prompts("train", cfg.task.n_train_prompts, seed=cfg.task.seed * 10_007 + round_)
    heldout = task.prompts("heldout", cfg.task.n_heldout_prompts, seed=cfg.task.seed)
    return train, heldout


def write_round_prompts(workdir: Path, cfg: Config, round_: int) -> list[TaskPrompt]:
    """Write the round's prompts file once; return the train prompts."""
    train, heldout = round_prompts(cfg, round_)
    path = prompts_path(workdir, round_)
    rows = [
        {"round": round_, "prompt_id": p.prompt_id, "split": p.split, "task": cfg.task.name,
         "prompt": p.prompt, "reference": p.reference}
        for p in train + heldout
    ]
    table = pa.Table.from_pylist(rows, schema=PROMPTS.arrow_schema)
    if path.exists():
        existing = read_parquet_checked(path, PROMPTS)
        if existing.column("prompt_id").to_pylist() != table.column("prompt_id").to_pylist():
            raise ConfigError(
                f"task: round {round_} in {workdir} was created with other prompts; "
                "use a new --workdir or the task settings it was created with")
    else:
        write_parquet_atomic(table, path, PROMPTS)
    return train


def plan_shards(prompts: list[TaskPrompt], shard_size: int) -> list[list[TaskPrompt]]:
    return [prompts[i:i + shard_size] for i in range(0, len(prompts), shard_size)]


def check_round_config(workdir: Path, round_: int, config_hash: str) -> None:
    """Refuse to mix candidates of two generation configs in one round."""
    others = {p.stem.rsplit("-", 1)[-1]
              for p in (round_dir(workdir, round_) / "candidates").glob("shard-*.parquet")}
    others.discard(config_hash)
    if others:
        raise ConfigError(
            f"generation: round {round_} in {workdir} already holds candidates from another "
            f"config (hash {sorted(others)}, now {config_hash}); use a new --workdir or --round, "
            "or the config that round was generated with")


@dataclass
class ShardResult:
    shard: int
    path: Path
    prompts: int
    candidates: int
    tokens: int
    seconds: float
    skipped: bool


def engine_kwargs(model_path: str, cfg: Config) -> dict:
    """The keyword arguments of vLLM's ``LLM(...)``. Data parallelism is not among them:
    ``LLM`` refuses ``data_parallel_size > 1`` in one process; a fleet runs one engine per
    worker instead (``generation.data_parallel_size`` workers, README: A fleet of workers)."""
    g = cfg.generation
    return dict(model=str(model_path), dtype=cfg.policy.dtype, enforce_eager=g.enforce_eager,
                enable_prefix_caching=True, max_num_seqs=g.max_num_seqs, seed=g.seed,
                tensor_parallel_size=g.tensor_parallel_size,
                pipeline_parallel_size=g.pipeline_parallel_size)


class VLLMGroupSampler:
    """A vLLM offline engine that turns prompts into candidate tables.

    Build it inside an ``if __name__ == "__main__":`` guarded program: the engine runs in a
    spawned process.
    """

    def __init__(self, model_path: Path, cfg: Config) -> None:
        g = cfg.generation
        configure_cpu_engine(g.kv_cache_gib)
        from vllm import LLM

        self.cfg = cfg
        self.model_path = str(model_path)
        started = time.perf_counter()
        self.llm = LLM(**engine_kwargs(self.model_path, cfg))
        self.startup_seconds = time.perf_counter() - started

    def sample(self, prompts: list[TaskPrompt], round_: int, config_hash: str,
               k: int | None = None) -> pa.Table:
        from vllm import SamplingParams

        g = self.cfg.generation
        k = k or g.k
        seeds = [prompt_seed(g.seed, round_, p.prompt_id) for p in prompts]
        params = [
            SamplingParams(n=k, temperature=g.temperature, top_p=g.top_p,
                           max_tokens=g.max_new_tokens, seed=s, logprobs=0)
            for s in seeds
        ]
        outputs = self.llm.generate([p.prompt for p in prompts], params, use_tqdm=False)
        eos = self.llm.get_tokenizer().eos_token_id
        rows = []
        for prompt, seed, out in zip(prompts, seeds, outputs, strict=True):
            gid = group_id(round_, prompt.prompt_id)
            for c in sorted(out.outputs, key=lambda c: c.index):
                rows.append({
                    "round": round_, "group_id": gid, "prompt_id": prompt.prompt_id,
                    "candidate_idx": c.index, "candidate_id": candidate_id(gid, c.index),
                    "text": c.text, "token_ids": _without_eos(c.token_ids, eos),
                    "policy": self.model_path, "n_tokens": len(c.token_ids),
                    "finish_reason": c.finish_reason or "unknown",
                    "logprob": c.cumulative_logprob, "seed": seed, "config_hash": config_hash,
                    "injection": detect_injection(c.text),
                })
        table = pa.Table.from_pylist(rows, schema=CANDIDATES.arrow_schema)
        if table.num_rows != len(prompts) * k:
            raise RuntimeError(f"vLLM returned {table.num_rows} candidates for "
                               f"{len(prompts)} prompts x k={k}")
        return table

    def close(self) -> None:
        """Stop the engine process now rather than at interpreter exit."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def _without_eos(token_ids, eos: int | None) -> list[int]:
    ids = list(token_ids)
    return ids[:-1] if ids and ids[-1] == eos else ids


def generate_shard(sampler: VLLMGroupSampler, workdir: Path, round_: int, shard: int,
                   prompts: list[TaskPrompt], config_hash: str) -> ShardResult:
    """Generate one shard unless its file already exists; write it atomically."""
    path = shard_path(workdir, "candidates", round_, shard, config_hash)
    if path.exists():
        table = read_parquet_checked(path, CANDIDATES)
        return ShardResult(shard, path, len(prompts), table.num_rows,
                           sum(table.column("n_tokens").to_pylist()), 0.0, skipped=True)
    started = time.perf_counter()
    table = sampler.sample(prompts, round_, config_hash)
    write_parquet_atomic(table, path, CANDIDATES)
    return ShardResult(shard, path, len(prompts), table.num_rows,
                       sum(table.column("n_tokens").to_pylist()),
                       time.perf_counter() - started, skipped=False)


def pending(workdir: Path, round_: int, shards: list[list[TaskPrompt]],
            config_hash: str) -> list[int]:
    return [i for i in range(len(shards))
            if not shard_path(workdir, "candidates", round_, i, config_hash).exists()]


ShardCallback = Callable[[ShardResult], None]
