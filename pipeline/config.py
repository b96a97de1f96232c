"""Typed run configuration, loaded from TOML and validated before any work starts.

Every field has a line of help. Unknown keys are errors (a typo must not silently fall back
to a default), and every check names the field and says what to fix. The resolved config is
written next to each run's output (see ``Config.to_toml``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "demo.toml"
DEMO_POLICY = "demo"  # resolves to WORKDIR/models/demo-policy


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which field and what to fix."""


@dataclass
class TaskConfig:
    name: str = "sort_digits"  # a registered task (pipeline.tasks.registered_tasks())
    n_train_prompts: int = 256  # prompts sampled each round for generation
    n_heldout_prompts: int = 128  # prompts kept for evaluation, never trained on
    seed: int = 0  # prompt generator seed


@dataclass
class PolicyConfig:
    model: str = DEMO_POLICY  # a Hugging Face causal-LM directory, or "demo"
    dtype: str = "bfloat16"  # weights dtype for vLLM: bfloat16, float16 or float32


@dataclass
class DemoModelConfig:
    hidden_size: int = 128  # vLLM's CPU attention wants head_dim in {32, 64, 80, ...}
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    vocab_size: int = 320  # byte-level BPE: 256 bytes + merges + specials
    batch_size: int = 64
    learning_rate: float = 3e-3
    max_steps: int = 4000  # hard cap on supervised steps
    eval_every: int = 50  # steps between held-out greedy evaluations
    eval_prompts: int = 128  # held-out prompts used for the early-stopping check
    stop_at_exact: float = 0.5  # stop once held-out exact match reaches this (keep it imperfect)
    seed: int = 0
    threads: int = 2
    rm_prompts: int = 160  # demo reward model: prompts whose samples give its training pairs
    rm_steps: int = 300  # held-out pair accuracy vs the verifier ~0.69: imperfect on purpose


@dataclass
class GenerationConfig:
    k: int = 8  # candidates per prompt (group size)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    seed: int = 1234  # per-prompt seeds derive from this, so reruns are identical
    shard_size: int = 64  # prompts per shard: the unit of resumable work
    max_num_seqs: int = 256  # vLLM batch limit
    kv_cache_gib: float = 1.0  # VLLM_CPU_KVCACHE_SPACE on CPU
    enforce_eager: bool = True  # skip torch.compile: faster engine start-up on CPU
    # Fleet and parallelism (see README, A fleet of workers); none of these change what is
    # sampled, so they are left out of the config hash that names the shard files.
    lease_ttl_s: float = 60.0  # a worker's claim on a shard lapses after this long unrenewed
    tensor_parallel_size: int = 1  # vLLM: GPUs each layer of one engine is split over
    pipeline_parallel_size: int = 1  # vLLM: GPUs (or nodes) one engine's layers are split over
    # Engines a round is spread over: `grpo fleet submit` starts this many worker runs, each
    # with its own engine (vLLM's LLM() refuses data_parallel_size > 1 in one process).
    data_parallel_size: int = 1


# Settings that do not change a section's output, kept out of its fingerprint.
NOT_FINGERPRINTED = {"generation": ("lease_ttl_s", "tensor_parallel_size",
                                    "pipeline_parallel_size", "data_parallel_size")}

JUDGE_SOURCES = ("verifier", "reward_model", "llm")


@dataclass
class JudgingConfig:
    # Sources to run. In the demo the verifier is the held-out gold measure, not a training
    # signal: rank.source picks what training sees.
    sources: list[str] = field(default_factory=lambda: ["verifier", "reward_model", "llm"])
    reward_models: list[str] = field(default_factory=lambda: ["demo"])  # dirs; demo = built here
    combine: str = "mean"  # several reward models: mean, min, or disagreement (mean - std)
    batch_size: int = 64  # candidates per reward-model forward pass


@dataclass
class LLMJudgeConfig:
    base_url: str = "embedded"  # an OpenAI-compatible /v1 URL, or embedded (vLLM on 127.0.0.1)
    model: str = "demo"  # model name at the endpoint; embedded: a model dir, demo = the policy
    api: str = "completions"  # chat or completions (a model without a chat template)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key
    mode: str = "listwise"  # listwise (one call scores the group) or pairwise (every pair)
    views: int = 2  # presentation orders per group (pairwise: both orders of each pair)
    score_low: float = 0.0
    score_high: float = 9.0
    structured: str = "regex"  # regex or json_schema (vLLM constrained output), none
    temperature: float = 0.0
    max_tokens: int = 64
    concurrency: int = 4  # requests in flight
    max_requests: int = 100_000  # cap per run; the rest stays pending for the next run
    max_attempts: int = 4  # per request, for 429, 5xx, timeouts and resets
    timeout_s: float = 30.0  # per request
    max_backoff_s: float = 30.0  # longest wait between attempts (Retry-After is honoured)
    port: int = 0  # embedded server port; 0 = any free port
    name: str = "judge"  # source name: llm:NAME


GROUP_POLICIES = ("keep", "downweight", "drop")


@dataclass
class RankConfig:
    # Source weights as GLOB=WEIGHT, first match wins. The demo's gold verifier gets 0: it is
    # the held-out measure, so it is audited against the consensus but never shapes it.
    weights: list[str] = field(default_factory=lambda: [
        "verifier:*=0", "rm:*=1", "rm-ensemble:*=1", "llm:*=0.5", "human:*=2"])
    default_weight: float = 1.0  # sources no pattern matches
    estimate_weights_from: str = ""  # GLOB of a trusted source (e.g. human:*); empty = off
    l2: float = 0.1  # Bradley-Terry prior strength: keeps strengths finite and unique
    contested_below: float = 0.0  # mean Kendall tau between weighted sources below this
    intransitive: str = "downweight"  # training policy for groups with consensus cycles
    contested: str = "downweight"  # training policy for contested groups
    downweight: float = 0.5  # weight given by the downweight policy
    chunk_groups: int = 50_000  # groups merged per vectorised chunk (memory bound)


@dataclass
class LoopConfig:
    rounds: int = 3  # generate -> judge -> rank -> train rounds for `grpo iterate`
    reference: str = "base"  # reference model for training: base (round 0 policy) or previous
    eval_k: int = 4  # samples per held-out prompt when evaluating a round's policy
    training_reward: str = "rm:*"  # GLOB of the sources whose score is "the training reward"
    stop_on_overoptimisation: bool = True  # stop when train reward rises while gold falls
    # Gold may fall this much before a round is flagged: ~1.7 standard errors of the mean gold
    # score at the demo's 128 held-out prompts x 4 samples, so noise alone rarely flags.
    overopt_tolerance: float = 0.02
    simulated_annotator: bool = True  # demo: noisy gold rankings on a sample of groups
    annotator_fraction: float = 0.1  # share of each round's groups the annotators rank
    annotator_noise: float = 0.3  # std of the noise added to gold scores before ranking
    annotator_cycles: float = 0.2  # share of annotated groups given a planted cycle


@dataclass
class ScheduleConfig:
    # Cron expressions for `grpo serve`; an empty string leaves that deployment unscheduled.
    generate_cron: str = "0 2 * * *"  # nightly: sample a new round with the current policy
    judge_cron: str = "0 4 * * *"  # then judge the newest round
    rank_cron: str = "0 5 * * *"  # then merge it into rankings
    iterate_cron: str = ""  # a whole round of the loop
    timezone: str = "UTC"


# The names of trainers.losses.LossType (pipeline/ may not import trainers/; a test keeps
# the two lists equal).
LOSS_NAMES = ("plackett_luce", "dpo", "all_pairs", "lipo_lambda")


@dataclass
class TrainConfig:
    loss: str = "plackett_luce"  # plackett_luce, dpo (best vs worst), all_pairs, lipo_lambda
    beta: float = 1.0  # strength of the implicit KL penalty (0.1 diverged on the demo)
    reference_free: bool = False  # s = beta * log pi, no reference model at all
    learning_rate: float = 2e-4
    epochs: int = 2
    groups_per_batch: int = 8  # groups per optimizer micro-batch (also capped by tokens)
    max_batch_tokens: int = 8192  # token positions per micro-batch, prompt counted once
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 5  # linear learning-rate warm-up
    checkpoint_every: int = 20  # optimizer steps between checkpoints
    keep_checkpoints: int = 2
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32), no, bf16
    seed: int = 0
    threads: int = 2  # torch CPU threads


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    demo_model: DemoModelConfig = field(default_factory=DemoModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    judging: JudgingConfig = field(default_factory=JudgingConfig)
    llm_judge: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self) -> Config:
        from pipeline.tasks import registered_tasks

        g = self.generation
        _check(self.task.name in registered_tasks(), "task.name",
               f"unknown task {self.task.name!r}; use one of {registered_tasks()}")
        _check(self.task.n_train_prompts >= 1, "task.n_train_prompts", "must be at least 1")
        _check(self.task.n_heldout_prompts >= 1, "task.n_heldout_prompts", "must be at least 1")
        _check(2 <= g.k <= 64, "generation.k",
               f"got {g.k}; a group needs at least 2 candidates to rank (2..64)")
        _check(g.temperature >= 0, "generation.temperature",
               f"got {g.temperature}; use 0 for greedy or a positive value")
        _check(0 < g.top_p <= 1, "generation.top_p", f"got {g.top_p}; must be in (0, 1]")
        _check(g.max_new_tokens >= 1, "generation.max_new_tokens", "must be at least 1")
        _check(g.shard_size >= 1, "generation.shard_size", "must be at least 1")
        _check(g.kv_cache_gib > 0, "generation.kv_cache_gib", "must be positive")
        _check(g.lease_ttl_s >= 1, "generation.lease_ttl_s",
               f"got {g.lease_ttl_s}; a lease needs at least 1 s to be renewed in time")
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            _check(getattr(g, name) >= 1, f"generation.{name}", "must be at least 1")
        _check(self.policy.dtype in ("bfloat16", "float16", "float32"), "policy.dtype",
               f"got {self.policy.dtype!r}; use bfloat16, float16 or float32")
        d = self.demo_model
        _check(d.hidden_size % d.num_heads == 0, "demo_model.hidden_size",
               "must be divisible by demo_model.num_heads")
        _check(0 < d.stop_at_exact <= 1, "demo_model.stop_at_exact", "must be in (0, 1]")
        j, q = self.judging, self.llm_judge
        unknown = sorted(set(j.sources) - set(JUDGE_SOURCES))
        _check(not unknown, "judging.sources",
               f"unknown source(s) {unknown}; use any of {list(JUDGE_SOURCES)}")
        _check(j.combine in ("mean", "min", "disagreement"), "judging.combine",
               f"got {j.combine!r}; use mean, min or disagreement")
        _check(q.api in ("chat", "completions"), "llm_judge.api", "use chat or completions")
        _check(q.mode in ("listwise", "pairwise"), "llm_judge.mode", "use listwise or pairwise")
        _check(q.views >= 2, "llm_judge.views",
               f"got {q.views}; every group is judged in at least two orders")
        _check(q.score_low < q.score_high, "llm_judge.score_low", "must be below score_high")
        _check(q.structured in ("regex", "json_schema", "none"), "llm_judge.structured",
               "use regex, json_schema or none")
        _check(q.structured != "regex" or (q.score_low >= 0 and q.score_high <= 9
                                           and float(q.score_low).is_integer()
                                           and float(q.score_high).is_integer()),
               "llm_judge.structured", "regex output needs integer scores within 0..9; "
               "use json_schema for other ranges")
        _check(q.concurrency >= 1, "llm_judge.concurrency", "must be at least 1")
        _check(q.max_attempts >= 1, "llm_judge.max_attempts", "must be at least 1")
        _check(q.timeout_s > 0, "llm_judge.timeout_s", "must be positive")
        r = self.rank
        for item in r.weights:
            pattern, sep, weight = item.rpartition("=")
            ok = bool(sep and pattern)
            try:
                ok = ok and float(weight) >= 0
            except ValueError:
                ok = False
            _check(ok, "rank.weights", f"{item!r} should read GLOB=WEIGHT with WEIGHT >= 0")
        _check(r.intransitive in GROUP_POLICIES, "rank.intransitive",
               f"use one of {list(GROUP_POLICIES)}")
        _check(r.contested in GROUP_POLICIES, "rank.contested",
               f"use one of {list(GROUP_POLICIES)}")
        _check(0 <= r.downweight <= 1, "rank.downweight", "must be in [0, 1]")
        _check(r.l2 > 0, "rank.l2", "must be positive")
        _check(-1 <= r.contested_below <= 1, "rank.contested_below", "a Kendall tau in [-1, 1]")
        _check(r.chunk_groups >= 1, "rank.chunk_groups", "must be at least 1")
        lp = self.loop
        _check(lp.rounds >= 1, "loop.rounds", "must be at least 1")
        _check(lp.reference in ("base", "previous"), "loop.reference", "use base or previous")
        _check(lp.eval_k >= 1, "loop.eval_k", "must be at least 1")
        for name in ("annotator_fraction", "annotator_cycles"):
            _check(0 <= getattr(lp, name) <= 1, f"loop.{name}", "must be in [0, 1]")
        for name in ("generate_cron", "judge_cron", "rank_cron", "iterate_cron"):
            cron = getattr(self.schedule, name)
            _check(cron == "" or len(cron.split()) == 5, f"schedule.{name}",
                   f"{cron!r} is not a 5-field cron expression (or empty to disable)")
        t = self.train
        _check(t.loss in LOSS_NAMES, "train.loss",
               f"unknown loss {t.loss!r}; use one of {list(LOSS_NAMES)}")
        _check(t.beta > 0, "train.beta", f"got {t.beta}; must be positive")
        _check(t.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(t.epochs >= 1, "train.epochs", "must be at least 1")
        _check(t.groups_per_batch >= 1, "train.groups_per_batch", "must be at least 1")
        _check(t.grad_accum >= 1, "train.grad_accum", "must be at least 1")
        _check(t.checkpoint_every >= 1, "train.checkpoint_every", "must be at least 1")
        _check(t.mixed_precision in ("auto", "no", "bf16", "fp16"), "train.mixed_precision",
               f"got {t.mixed_precision!r}; use auto, no, bf16 or fp16")
        return self

    def policy_path(self, workdir: Path) -> Path:
        if self.policy.model == DEMO_POLICY:
            return Path(workdir) / "models" / "demo-policy"
        return Path(self.policy.model).expanduser()

    def require_policy(self, workdir: Path) -> Path:
        """The policy directory, or a ConfigError that says how to get one."""
        path = self.policy_path(workdir)
        if not (path / "config.json").is_file():
            hint = ("run `grpo build-demo-model` first" if self.policy.model == DEMO_POLICY
                    else "point policy.model at a Hugging Face model directory (with config.json)")
            raise ConfigError(f"policy.model: no model at {path}; {hint}")
        return path

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    def fingerprint(self, *sections: str) -> str:
        """A short stable hash of the named sections: it names output files, so that a
        changed setting writes new files instead of being mistaken for finished work."""
        payload = {s: {k: v for k, v in self.to_dict()[s].items()
                       if k not in NOT_FINGERPRINTED.get(s, ())} for s in sorted(sections)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a table, got {value!r}")
            kwargs[name] = _build(type(default), value, f"{where}.{name}" if where else name)
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{name}: expected {expected.__name__}, got {value!r}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{name}: expected a list of strings, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML config (default: the embedded demo), apply dotted overrides, validate."""
    path = Path(path) if path else DEMO_CONFIG
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config: {path} is not valid TOML: {err}") from err
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown} in {path}; known: {sorted(known)}")
    cfg = Config(**{s: _build(type(getattr(Config(), s)), v, s) for s, v in raw.items()})
    return cfg.validate()
