"""Sample groups of k candidates per prompt with vLLM, one resumable shard at a time.

One engine serves a whole stage (start-up costs 15-40 s); shards are the unit of saved
work. Each prompt gets its own seed derived from (generation seed, round, prompt id), so a
shard regenerated after a crash holds exactly what the first attempt would have written,
whatever batch it lands in.

A round's identity (``config_hash``, part of every shard's name) is what decides its samples
and files, and nothing else: the policy's content fingerprint (not its path as typed), the
sampling settings, the stop ids, the prompts' token ids and the shard layout. Engine and
memory settings are not part of it, so a round that ran out of memory resumes with more.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pipeline import vllm_reload
from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.chat import PromptRenderer
from pipeline.config import Config, ConfigError, stable_hash
from pipeline.fingerprints import default_cache, model_fingerprint
from pipeline.hardware import engine_dtype, engine_eager, has_cuda
from pipeline.judging.injection import detect as detect_injection
from pipeline.prompts import PromptSet, load_prompt_set, round_rows
from pipeline.resolve import prompt_files
from pipeline.rounds import read_manifest, relative_to_workdir, write_manifest
from pipeline.schema import CANDIDATES, PROMPTS
from pipeline.store import candidate_id, group_id, prompts_path, round_dir, shard_path

SAMPLING_FIELDS = ("k", "temperature", "top_p", "max_new_tokens", "seed", "shard_size")


def cpu_engine_env(kv_cache_gib: float) -> dict[str, str]:
    """vLLM-on-CPU settings measured on 2-core machines (see README, Performance), for an
    engine's environment; a variable the environment already sets is kept (the user's
    value wins). Empty with a GPU."""
    if has_cuda():
        return {}
    wanted = {
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(kv_cache_gib))),
        # The default binding reserves a core for the engine: on 2 cores that costs ~40%.
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # Spawn, not fork: the caller may hold threads (Prefect, rich) that fork would copy.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


def configure_cpu_engine(kv_cache_gib: float) -> None:
    """``cpu_engine_env`` set in this process, for an engine started in it (the offline
    ``LLM`` reads them from here)."""
    for key, value in cpu_engine_env(kv_cache_gib).items():
        os.environ.setdefault(key, value)


def prompt_seed(base_seed: int, round_: int, prompt_id: str) -> int:
    digest = hashlib.blake2b(f"{base_seed}:{round_}:{prompt_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % (2**31 - 1)


def model_max_len(model_dir: Path, cfg: Config) -> int | None:
    """The context the engine will allow: generation.max_model_len, else the model's."""
    if cfg.generation.max_model_len:
        return cfg.generation.max_model_len
    conf = json.loads((Path(model_dir) / "config.json").read_text())
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(conf.get(key), int):
            return conf[key]
    return None


@dataclass
class RoundPlan:
    round: int
    policy: Path
    policy_fingerprint: str
    config_hash: str
    stop_ids: list[int]
    train: list[dict]
    heldout: list[dict]
    prompt_set: PromptSet
    shards: list[list[dict]] = field(default_factory=list)

    @property
    def prompt_summary(self) -> dict:
        return self.prompt_set.summary()


def samples_identity(cfg: Config, policy_fp: str, stop_ids: list[int], train: list[dict]) -> str:
    g = cfg.generation
    prompts = stable_hash([[r["prompt_id"], r["prompt_token_ids"]] for r in train], 32)
    return stable_hash({"model": policy_fp, "sampling": {f: getattr(g, f) for f in
                                                          SAMPLING_FIELDS},
                        "stop_ids": stop_ids, "prompts": prompts})


def plan_round(workdir: Path, cfg: Config, round_: int, policy: Path) -> RoundPlan:
    """Render the round's prompts with the policy's chat template, fix the round's identity
    and write its prompts file and manifest (once; a second call checks they agree)."""
    workdir = Path(workdir)
    renderer = PromptRenderer(policy, cfg.policy.chat_template)
    pset = load_prompt_set(workdir, prompt_files(cfg, workdir), cfg.prompts, renderer,
                           model_max_len(policy, cfg), cfg.generation.max_new_tokens)
    rows = round_rows(pset, cfg.prompts, round_)
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    policy_fp = model_fingerprint(policy, default_cache(workdir))
    config_hash = samples_identity(cfg, policy_fp, renderer.stop_ids, train)

    table = pa.Table.from_pylist(rows, schema=PROMPTS.arrow_schema)
    path = prompts_path(workdir, round_)
    if path.exists():
        existing = read_parquet_checked(path, PROMPTS)
        if (existing.column("prompt_id").to_pylist() != table.column("prompt_id").to_pylist()
                or existing.column("prompt_token_ids").to_pylist()
                != table.column("prompt_token_ids").to_pylist()):
            raise ConfigError(
                f"prompts: round {round_} in {workdir} was created with other prompts (a "
                "changed prompts file, [prompts] setting or chat template); use a new "
                "--workdir or the settings it was created with")
    check_round_config(workdir, round_, config_hash)
    if not path.exists():
        write_parquet_atomic(table, path, PROMPTS)
    shards = [train[i:i + cfg.generation.shard_size]
              for i in range(0, len(train), cfg.generation.shard_size)]
    manifest = read_manifest(workdir, round_) or {}
    if manifest.get("config_hash") != config_hash:
        write_manifest(workdir, round_, {
            "round": round_, "policy": relative_to_workdir(policy, workdir),
            "policy_fingerprint": policy_fp, "config_hash": config_hash,
            "shards": len(shards), "train_prompts": len(train), "heldout_prompts": len(heldout),
            "k": cfg.generation.k, "stop_ids": renderer.stop_ids,
            "prompt_set": pset.fingerprint})
    return RoundPlan(round_, Path(policy), policy_fp, config_hash, renderer.stop_ids, train,
                     heldout, pset, shards)


def check_round_config(workdir: Path, round_: int, config_hash: str) -> None:
    """Refuse to mix candidates of two generation configs in one round."""
    others = {p.stem.rsplit("-", 1)[-1]
              for p in (round_dir(workdir, round_) / "candidates").glob("shard-*.parquet")}
    others.discard(config_hash)
    if others:
        raise ConfigError(
            f"generation: round {round_} in {workdir} already holds candidates of other "
            f"samples (hash {sorted(others)}, now {config_hash}): the policy's weights, the "
            "sampling settings, the prompts or shard_size changed. Use a new --workdir or "
            "--round, or the settings and model that round was generated with")


@dataclass
class ShardResult:
    shard: int
    path: Path
    prompts: int
    candidates: int
    tokens: int
    seconds: float
    skipped: bool


def engine_kwargs(model_path: Path, cfg: Config) -> dict:
    """What ``vllm.LLM`` is built with: dtype, batching, parallelism and memory settings."""
    g = cfg.generation
    kwargs = dict(model=str(model_path), dtype=engine_dtype(cfg.policy.dtype),
                  enforce_eager=engine_eager(g.enforce_eager),
                  enable_prefix_caching=True, max_num_seqs=g.max_num_seqs, seed=g.seed,
                  tensor_parallel_size=g.tensor_parallel_size,
                  pipeline_parallel_size=g.pipeline_parallel_size,
                  worker_extension_cls=vllm_reload.QUALNAME)
    # data_parallel_size is not passed: vLLM's offline engine refuses it in one process
    # ("not supported for single-process usage"); a fleet of workers is the data parallelism.
    if g.max_model_len:
        kwargs["max_model_len"] = g.max_model_len
    if has_cuda():
        kwargs["gpu_memory_utilization"] = g.gpu_memory_utilization
    return kwargs


class VLLMGroupSampler:
    """A vLLM offline engine that turns rendered prompts into candidate tables.

    Build it inside an ``if __name__ == "__main__":`` guarded program: the engine runs in a
    spawned process.
    """

    def __init__(self, model_path: Path, cfg: Config, workdir: Path | None = None) -> None:
        configure_cpu_engine(cfg.generation.kv_cache_gib)
        from vllm import LLM

        self.cfg = cfg
        self.workdir = workdir
        self.model_path = Path(model_path)
        self.policy_label = relative_to_workdir(model_path, workdir) if workdir else \
            str(model_path)
        started = time.perf_counter()
        self.llm = LLM(**engine_kwargs(model_path, cfg))
        self.startup_seconds = time.perf_counter() - started

    def sample(self, prompts: list[dict], round_: int, config_hash: str, stop_ids: list[int],
               k: int | None = None) -> pa.Table:
        """``prompts``: rows of the prompts table (their ``prompt_token_ids`` are sent)."""
        from vllm import SamplingParams

        g = self.cfg.generation
        k = k or g.k
        seeds = [prompt_seed(g.seed, round_, p["prompt_id"]) for p in prompts]
        params = [SamplingParams(n=k, temperature=g.temperature, top_p=g.top_p,
                                 max_tokens=g.max_new_tokens, seed=s, logprobs=0,
                                 stop_token_ids=list(stop_ids))
                  for s in seeds]
        inputs = [{"prompt_token_ids": list(p["prompt_token_ids"])} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        stops = set(stop_ids)
        rows = []
        for prompt, seed, out in zip(prompts, seeds, outputs, strict=True):
            gid = group_id(round_, prompt["prompt_id"])
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids, stop = split_stop_token(list(c.token_ids), c.finish_reason, c.stop_reason,
                                             stops)
                rows.append({
                    "round": round_, "group_id": gid, "prompt_id": prompt["prompt_id"],
                    "candidate_idx": c.index, "candidate_id": candidate_id(gid, c.index),
                    "text": c.text, "token_ids": ids, "policy": self.policy_label,
                    "n_tokens": len(ids), "finish_reason": c.finish_reason or "unknown",
                    "stop_token_id": stop, "logprob": c.cumulative_logprob, "seed": seed,
                    "config_hash": config_hash, "injection": detect_injection(c.text),
                })
        table = pa.Table.from_pylist(rows, schema=CANDIDATES.arrow_schema)
        if table.num_rows != len(prompts) * k:
            raise RuntimeError(f"vLLM returned {table.num_rows} candidates for "
                               f"{len(prompts)} prompts x k={k}")
        return table

    def reload(self, model_path: Path) -> None:
        """Load another policy's weights into the running engine (same architecture,
        dtype, tokenizer and generation config: see ``pipeline.policy_engine``) and drop the
        prefix cache, whose blocks were computed with the old weights."""
        self.llm.collective_rpc("reload_policy", args=(str(model_path),))
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM kept its prefix cache after a weight reload: the next "
                               "samples would reuse the old policy's keys and values")
        self.relabel(model_path)

    def relabel(self, model_path: Path) -> None:
        """Name the samples after ``model_path`` (the weights the engine holds)."""
        self.model_path = Path(model_path)
        self.policy_label = relative_to_workdir(model_path, self.workdir) if self.workdir \
            else str(model_path)

    def close(self) -> None:
        """Stop the engine process now rather than at interpreter exit."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def split_stop_token(ids: list[int], finish_reason: str | None, stop_reason,
                     stop_ids: set[int]) -> tuple[list[int], int | None]:
    """(completion ids without the stop token, the stop token id or None).

    vLLM reports the token that ended a sample as the last id, and as ``stop_reason`` when it
    was one of ``stop_token_ids`` (None for the tokenizer's EOS)."""
    if finish_reason != "stop":
        return ids, None
    if ids and ids[-1] in stop_ids:
        return ids[:-1], ids[-1]
    return ids, stop_reason if isinstance(stop_reason, int) else None


def generate_shard(sampler: VLLMGroupSampler, workdir: Path, plan: RoundPlan,
                   shard: int) -> ShardResult:
    """Generate one shard unless its file already exists; write it atomically."""
    prompts = plan.shards[shard]
    path = shard_path(workdir, "candidates", plan.round, shard, plan.config_hash)
    if path.exists():
        table = read_parquet_checked(path, CANDIDATES)
        return ShardResult(shard, path, len(prompts), table.num_rows,
                           sum(table.column("n_tokens").to_pylist()), 0.0, skipped=True)
    started = time.perf_counter()
    table = sampler.sample(prompts, plan.round, plan.config_hash, plan.stop_ids)
    write_parquet_atomic(table, path, CANDIDATES)
    return ShardResult(shard, path, len(prompts), table.num_rows,
                       sum(table.column("n_tokens").to_pylist()),
                       time.perf_counter() - started, skipped=False)


def pending(workdir: Path, plan: RoundPlan) -> list[int]:
    return [i for i in range(len(plan.shards))
            if not shard_path(workdir, "candidates", plan.round, i, plan.config_hash).exists()]


def count_round(workdir: Path, plan: RoundPlan) -> int:
    import pyarrow.parquet as pq

    files = (round_dir(workdir, plan.round) / "candidates").glob(
        f"shard-*-{plan.config_hash}.parquet")
    return sum(pq.read_metadata(f).num_rows for f in files)


ShardCallback = Callable[[ShardResult], None]
