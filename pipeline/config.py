"""Typed run configuration, loaded from TOML and validated before any work starts.

Every section is a pydantic model: a field carries its type, its constraints and a line of
help (``grpo config-schema`` prints them as JSON Schema). Unknown keys are errors (a typo must
not silently fall back to a default), and every error names the field, the value it got and
what to fix. The class defaults are generic; the embedded demo is ``data/demo.toml``, a config
file like any user's. The resolved config is written next to each run's output.

Checks that need the file system (does the model directory exist?) live in
``pipeline.resolve``: a command resolves every path it will need before starting anything.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.resources import DEMO_CONFIG

DEMO = "demo"  # a model or prompts value that resolves to what `grpo build-demo-model` builds


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which field and what to fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptsConfig(Section):
    path: str = Field("", description=(
        "your prompts: a .jsonl, .json, .csv or .parquet file, a glob of such files, or a "
        "datasets.save_to_disk directory; 'demo' = the demo task's file that "
        "`grpo build-demo-model` writes"))
    column: str = Field("prompt", description=(
        "column holding each prompt: a string (one user turn) or a list of "
        "{role, content} messages ending with a user turn"))
    id_column: str = Field("", description="column with stable prompt ids; empty = a hash of "
                                          "the content")
    reference_column: str = Field("", description="optional column a verifier compares against")
    split_column: str = Field("", description="optional column with values train / heldout")
    heldout_fraction: float = Field(0.1, ge=0, lt=1, description=(
        "without split_column: share of prompts held out for evaluation, chosen "
        "deterministically from the id"))
    system_prompt: str = Field("", description="system message added to rows that have none")
    max_prompt_tokens: int = Field(1024, ge=1, description=(
        "a prompt longer than this after the chat template is quarantined, never truncated"))
    n_train_per_round: int = Field(256, ge=1, description=(
        "train prompts drawn per round; no prompt repeats until the dataset is used up"))
    n_heldout: int = Field(128, ge=0, description="held-out prompts used for evaluation; 0 = all")
    seed: int = Field(0, description="seed of the per-round draw")


class PolicyConfig(Section):
    model: str = Field("", description="a Hugging Face causal-LM directory, or 'demo'")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description=(
            "weights dtype for vLLM (the policy engine and the embedded judge server); auto: "
            "bfloat16 on a GPU and on a CPU with native bf16 (AVX-512 BF16, AMX), else float32, "
            "1.7-6.9x faster there (pipeline/hardware.py)"))
    chat_template: str = Field("auto", description=(
        "auto (the tokenizer's chat template when it has one), none (turn contents joined by "
        "blank lines), or the path of a Jinja template file"))


class DemoModelConfig(Section):
    task: str = Field("sort_digits", description="built-in task the demo models are built for")
    prompts_train: int = Field(4096, ge=1, description="train prompts in the demo prompts file")
    prompts_heldout: int = Field(256, ge=1, description="held-out prompts in that file")
    hidden_size: int = Field(128, description="vLLM's CPU attention wants head_dim in "
                                              "{32, 64, 80, ...}")
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    vocab_size: int = Field(320, description="byte-level BPE: 256 bytes + merges + specials")
    batch_size: int = 64
    learning_rate: float = 3e-3
    max_steps: int = Field(4000, description="hard cap on supervised steps")
    eval_every: int = Field(50, description="steps between held-out greedy evaluations")
    eval_prompts: int = Field(128, description="held-out prompts for the early-stopping check")
    stop_at_exact: float = Field(0.5, gt=0, le=1, description=(
        "stop once held-out exact match reaches this (keep the policy imperfect)"))
    seed: int = 0
    threads: int = 2
    rm_prompts: int = Field(160, description="demo reward model: prompts whose samples give "
                                             "its training pairs")
    rm_steps: int = Field(300, description="held-out pair accuracy vs the verifier ~0.69: "
                                           "imperfect on purpose")

    @model_validator(mode="after")
    def _heads_divide(self) -> DemoModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("demo_model.hidden_size: must be divisible by demo_model.num_heads")
        return self


class DemoJudgeConfig(Section):
    """The demo's LLM judge (pipeline/demo_judge.py): a tiny causal LM trained to score a
    group in the listwise template; label noise and a small budget keep it imperfect."""

    hidden_size: int = Field(128, ge=32, description=(
        "vLLM's CPU attention wants head_dim (hidden_size / num_heads) in {32, 64, 80, ...}"))
    num_layers: int = Field(3, ge=2, description=(
        "at least 2: an inner layer summarises each candidate, the last matches answer slots "
        "to candidates"))
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=1)
    vocab_size: int = Field(1024, ge=300, description=(
        "BPE trained on rendered judge prompts: the template's fixed text becomes few tokens"))
    train_prompts: int = Field(256, ge=1, description=(
        "prompts whose demo-policy samples (with noisy labels) train the judge"))
    samples_per_prompt: int = Field(16, ge=2, description=(
        "samples per training prompt; training groups are random subsets in random orders"))
    min_k: int = Field(2, ge=2, description="smallest group size trained on")
    max_k: int = Field(8, ge=2, description="largest group size trained on (and held out)")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="groups per step")
    learning_rate: float = Field(2e-3, gt=0)
    off_task_per_prompt: int = Field(2, ge=0, description=(
        "off-task texts (prose, refusals, attempts to instruct the judge, fake verdicts; "
        "pipeline/off_task.py) added to each training prompt's samples and labelled by the "
        "verifier: a judge that never saw one rates it at random"))
    label_noise: float = Field(1.0, ge=0, description=(
        "std (score points) of the noise drawn once per training sample on its target score: "
        "what keeps the judge imperfect"))
    heldout_groups: int = Field(256, ge=1, description=(
        "groups of max_k on unseen prompts, each judged in two views, for the reported tau"))
    seed: int = 0
    threads: int = Field(2, ge=1, description=(
        "torch CPU threads: 2 trains 1.45x faster than 1 on an idle 2-core machine (0.28 vs "
        "0.41 s per step); on a machine busy with other jobs use 1 (a second thread was 5x "
        "slower per step at load 4-6)"))

    @model_validator(mode="after")
    def _shapes(self) -> DemoJudgeConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("demo_judge.hidden_size: must be divisible by demo_judge.num_heads")
        if not self.min_k <= self.max_k <= self.samples_per_prompt:
            raise ValueError(f"demo_judge.max_k: need min_k <= max_k <= samples_per_prompt, got "
                             f"{self.min_k}, {self.max_k}, {self.samples_per_prompt}")
        return self


class GenerationConfig(Section):
    k: int = Field(8, description="candidates per prompt (group size)")
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, ge=1)
    seed: int = Field(1234, description="per-prompt seeds derive from this: reruns are identical")
    shard_size: int = Field(64, ge=1, description=(
        "prompts per shard, the unit of resumable work (part of a round's identity)"))
    # Engine settings: they do not change what is sampled, so they are not part of the
    # round's identity (raising memory after a crash resumes the round).
    max_num_seqs: int = Field(256, ge=1, description="vLLM batch limit")
    kv_cache_gib: float = Field(1.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    enforce_eager: bool | Literal["auto"] = Field("auto", description=(
        "skip torch.compile and CUDA graphs; auto = eager on a CPU (start-up 14-18 s against "
        "50 s compiled, for 1.23x the tokens/s: worth it only past ~3 min of generation per "
        "engine), compiled on a GPU (vLLM's default: CUDA graphs)"))
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallelism (GPUs)")
    pipeline_parallel_size: int = Field(1, ge=1, description="vLLM pipeline parallelism")
    data_parallel_size: int = Field(1, ge=1, description=(
        "data parallelism: the worker runs `grpo fleet submit` starts by default, one engine "
        "each (vLLM refuses in-process data parallelism in its offline engine)"))
    lease_ttl_s: float = Field(60.0, ge=1, description=(
        "a shard's lease lapses this long after its worker's last heartbeat; another worker "
        "then takes the shard over"))
    max_model_len: int = Field(0, ge=0, description="vLLM context length; 0 = the model's")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM, on a GPU")
    keep_engine: Literal["auto", "always", "never"] = Field("auto", description=(
        "the loop's vLLM engine stays up while the round is judged and trained and takes the "
        "next policy's weights in place (one start per loop, not per round); auto = on CPU "
        "only, since on a GPU it holds gpu_memory_utilization of the memory the reward "
        "models and the trainer need"))

    @field_validator("k")
    @classmethod
    def _k(cls, k: int) -> int:
        if not 2 <= k <= 64:
            raise ValueError(f"got {k}; a group needs at least 2 candidates to rank (2..64)")
        return k


JUDGE_SOURCES = ("verifier", "reward_model", "llm")


class JudgingConfig(Section):
    sources: list[Literal["verifier", "reward_model", "llm"]] = Field(
        default_factory=lambda: ["reward_model"], description="judges to run")
    verifier: str = Field("", description=(
        "a built-in task (e.g. sort_digits) or 'pkg.module:function' (prompt row, completion) "
        "-> score in [0, 1]; its source is verifier:NAME"))
    reward_models: list[str] = Field(default_factory=list, description=(
        "sequence-classification model directories ('demo' = the demo reward model); each is "
        "a source rm:DIRNAME"))
    combine: Literal["mean", "min", "disagreement"] = Field(
        "mean", description="several reward models: mean, min, or mean - std of z-scores")
    max_batch_tokens: int = Field(16384, ge=1, description="token positions per reward-model "
                                                           "forward pass")
    max_length: int = Field(0, ge=0, description=(
        "reward-model input cap in tokens, cut from the start of the conversation; 0 = the "
        "model's own limit"))


# Measured on the demo judge served by vLLM on 2 cores: 16 requests in flight judged 2.89x
# (1.91-3.09, 3 interleaved reps) the groups/s of 4 (64: 2.85x, noisier) on the AVX2 EPYC in
# float32 (2026-12-04); 32 judged 1.60x (1.47-1.64) the groups/s of 16 on a loop's shard of 64
# groups on the AMX Xeon in bfloat16 (64: 1.31x, 1.03-2.11), each with identical scores
# (`python -m bench.judging --groups 64 --sweep-concurrency 16,32,64 --sweep-baseline 16`,
# 2026-12-06; the default was 16 then).
EMBEDDED_JUDGE_CONCURRENCY = 32


class LLMJudgeConfig(Section):
    base_url: str = Field("", description="an OpenAI-compatible /v1 URL, or 'embedded' (vLLM's "
                                          "server on 127.0.0.1 from llm_judge.model)")
    model: str = Field("", description="model name at the endpoint; embedded: a model "
                                       "directory, or 'demo' (the demo judge)")
    api: Literal["chat", "completions"] = Field("chat", description=(
        "chat, or completions for a model without a chat template"))
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable with the key")
    mode: Literal["listwise", "pairwise"] = "listwise"
    views: int = Field(2, description="presentation orders per group (pairwise: both orders)")
    score_low: float = 0.0
    score_high: float = 9.0
    structured: Literal["regex", "json_schema", "none"] = Field(
        "json_schema", description="constrained output (vLLM's regex or JSON schema), or none")
    temperature: float = 0.0
    max_tokens: int = 64
    concurrency: int = Field(4, ge=1, description=(
        f"requests in flight; unset with base_url 'embedded': {EMBEDDED_JUDGE_CONCURRENCY} (a "
        "local vLLM server batches them: 1.6x the groups/s of 16 on the demo judge)"))
    max_requests: int = Field(100_000, ge=0, description=(
        "cap per run; unfinished groups stay pending for the next run"))
    max_attempts: int = Field(4, ge=1, description="per request: 429, 5xx, timeouts, resets")
    timeout_s: float = Field(30.0, gt=0, description="per request")
    max_backoff_s: float = Field(30.0, ge=0, description="longest wait between attempts")
    port: int = Field(0, description="embedded server port; 0 = any free port")
    start_early: bool = Field(True, description=(
        "embedded: `grpo iterate` starts the judge's server with the loop, so that its "
        "start-up overlaps the policy engine's and the first generation; false: at the "
        "first judge stage"))
    name: str = Field("judge", description="source name: llm:NAME")

    @model_validator(mode="before")
    @classmethod
    def _embedded_concurrency(cls, data: Any) -> Any:
        # A remote API keeps 4 in flight (rate limits); the embedded server is ours.
        if isinstance(data, dict) and data.get("base_url") == "embedded" \
                and "concurrency" not in data:
            return {**data, "concurrency": EMBEDDED_JUDGE_CONCURRENCY}
        return data

    @field_validator("views")
    @classmethod
    def _views(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"got {v}; every group is judged in at least two orders")
        return v

    @model_validator(mode="after")
    def _scores(self) -> LLMJudgeConfig:
        if self.score_low >= self.score_high:
            raise ValueError("llm_judge.score_low: must be below score_high")
        ints = float(self.score_low).is_integer() and float(self.score_high).is_integer()
        if self.structured == "regex" and not (ints and 0 <= self.score_low
                                               and self.score_high <= 9):
            raise ValueError("llm_judge.structured: regex output needs integer scores within "
                             "0..9; use json_schema for other ranges")
        return self


GroupPolicy = Literal["keep", "downweight", "drop"]


class RankConfig(Section):
    weights: list[str] = Field(default_factory=lambda: ["human:*=2", "llm:*=0.5"], description=(
        "source weights as GLOB=WEIGHT, first match wins; an explicit 0 stays 0 whatever "
        "weight estimation says, and the gold source (loop.gold) is always 0"))
    default_weight: float = Field(1.0, ge=0, description="sources no pattern matches")
    estimate_weights_from: str = Field("", description=(
        "GLOB of a trusted source (e.g. human:*); empty = off"))
    l2: float = Field(0.1, gt=0, description="Bradley-Terry prior: keeps strengths finite")
    contested_below: float = Field(0.0, ge=-1, le=1, description=(
        "mean Kendall tau between weighted sources below this = contested"))
    intransitive: GroupPolicy = Field("downweight", description="groups with consensus cycles")
    contested: GroupPolicy = "downweight"
    downweight: float = Field(0.5, ge=0, le=1, description="weight the downweight policy gives")
    # 25k, not more: a chunk's largest tensor (groups x sources x k x k float32, 19 MB at k=8
    # with 3 sources) then stays under glibc's 32 MiB limit for reusing freed memory, so
    # chunks do not fault fresh pages in (measured 1.1-1.25x faster than 50k at 250k groups,
    # 20% less peak RSS; results do not depend on it). Also the size of a read batch (whole
    # candidate shards of about this many groups).
    chunk_groups: int = Field(25_000, ge=1, description="groups merged per vectorised chunk")

    @field_validator("weights")
    @classmethod
    def _weights(cls, items: list[str]) -> list[str]:
        for item in items:
            pattern, sep, weight = item.rpartition("=")
            try:
                ok = bool(sep and pattern) and float(weight) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{item!r} should read GLOB=WEIGHT with WEIGHT >= 0")
        return items


class LoopConfig(Section):
    rounds: int = Field(3, ge=1, description="rounds of generate -> judge -> rank -> train")
    reference: Literal["base", "previous"] = Field("base", description="reference model")
    eval_k: int = Field(4, ge=1, description="samples per held-out prompt per evaluation")
    gold: str = Field("", description=(
        "the held-out judge (verifier:NAME, rm:NAME or llm:NAME): weight 0 in the consensus, "
        "scores held-out samples each round; empty = no over-optimisation watch"))
    training_reward: str = Field("rm:*", description=(
        "GLOB of the sources whose score is 'the training reward' in evaluation"))
    stop_on_overoptimisation: bool = True
    overopt_tolerance: float = Field(0.02, ge=0, description=(
        "gold may fall this much before a round is flagged (~1.7 standard errors of the "
        "demo's mean gold score)"))
    simulated_annotator: bool = Field(False, description=(
        "demo: noisy gold rankings on a sample of groups, through the import path"))
    annotator_fraction: float = Field(0.1, ge=0, le=1)
    annotator_noise: float = Field(0.3, ge=0)
    annotator_cycles: float = Field(0.2, ge=0, le=1)


class ScheduleConfig(Section):
    generate_cron: str = Field("", description="sample the next round with the newest policy")
    judge_cron: str = Field("", description="judge the newest fully generated round")
    rank_cron: str = Field("", description="rank the newest judged round")
    iterate_cron: str = Field("", description="one new round of the whole loop per run")
    timezone: str = "UTC"

    @field_validator("generate_cron", "judge_cron", "rank_cron", "iterate_cron")
    @classmethod
    def _cron(cls, cron: str) -> str:
        if cron and len(cron.split()) != 5:
            raise ValueError(f"{cron!r} is not a 5-field cron expression (or empty to disable)")
        return cron


# The names of trainers.losses.LossType (pipeline/ may not import trainers/; a test keeps
# the two lists equal).
LOSS_NAMES = ("plackett_luce", "dpo", "all_pairs", "lipo_lambda")


class TrainConfig(Section):
    loss: Literal["plackett_luce", "dpo", "all_pairs", "lipo_lambda"] = "plackett_luce"
    beta: float = Field(1.0, gt=0, description="strength of the implicit KL penalty")
    reference_free: bool = Field(False, description="s = beta * log pi, no reference model")
    learning_rate: float = Field(2e-4, gt=0)
    epochs: int = Field(2, ge=1)
    groups_per_batch: int = Field(8, ge=1, description=(
        "groups per optimizer step (times grad_accum), over all processes together: the "
        "global batch; each group weighs the same in a step however the step is cut"))
    max_batch_tokens: int = Field(8192, ge=1, description=(
        "token positions per forward/backward pass on one process, prompt counted once; a "
        "group larger than this is split across passes without changing its loss"))
    grad_accum: int = Field(1, ge=1, description=(
        "multiplies groups_per_batch: an optimizer step covers groups_per_batch x grad_accum "
        "groups (memory is bounded by max_batch_tokens, not by this)"))
    warmup_steps: int = Field(5, ge=0)
    checkpoint_every: int = Field(20, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on a GPU that has it, else fp32")
    gradient_checkpointing: bool = Field(False, description=(
        "recompute activations in backward (less memory, about a third more compute); "
        "groups are then packed into one block-masked row (trainers/logprobs.py)"))
    lora_rank: int = Field(0, ge=0, description=(
        "0 = full fine-tuning; > 0 = LoRA adapters of this rank (peft), the reference being "
        "the base model with the adapter disabled; the output is the merged model, the "
        "adapter beside it in OUTPUT.adapter/"))
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = "
                                                      "alpha / rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch")
    lora_target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], description=(
        "module names to adapt (e.g. q_proj, v_proj); ['all-linear'] = every linear layer "
        "but the output head"))
    load_in_4bit: bool = Field(False, description=(
        "QLoRA: the frozen base in 4-bit NF4 through bitsandbytes (needs a CUDA GPU and "
        "lora_rank > 0)"))
    reference_cache: bool = Field(True, description=(
        "reference log-probs computed once and cached in WORKDIR/cache; with LoRA whose "
        "reference is the policy's own base, false computes them every step with the adapter "
        "disabled instead (see README, Performance)"))
    report_to: Literal["", "tensorboard", "mlflow", "wandb"] = Field("", description=(
        "experiment tracker (accelerate's): per-step training metrics and per-round "
        "evaluations; local files by default (wandb offline, MLflow file store), a server "
        "only if you configure one (WANDB_MODE, MLFLOW_TRACKING_URI)"))
    tracking_dir: str = Field("", description="where trackers write; empty = WORKDIR/tracking")
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch CPU threads")

    @model_validator(mode="after")
    def _quantized_base_needs_lora(self) -> TrainConfig:
        if self.load_in_4bit and not self.lora_rank:
            raise ValueError("train.load_in_4bit: a 4-bit base cannot be fine-tuned in full; "
                             "set train.lora_rank > 0 (QLoRA) or load_in_4bit = false")
        return self


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    demo_model: DemoModelConfig = Field(default_factory=DemoModelConfig)
    demo_judge: DemoJudgeConfig = Field(default_factory=DemoJudgeConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)
    llm_judge: LLMJudgeConfig = Field(default_factory=LLMJudgeConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        j = self.judging
        if j.verifier and ":" not in j.verifier:
            from pipeline.tasks import registered_tasks

            if j.verifier not in registered_tasks():
                raise ValueError(f"judging.verifier: unknown built-in {j.verifier!r}; use one "
                                 f"of {registered_tasks()} or 'pkg.module:function'")
        if "verifier" in j.sources and not j.verifier:
            raise ValueError("judging.verifier: judging.sources has 'verifier' but no verifier "
                             "is set; name a built-in task or 'pkg.module:function'")
        if "reward_model" in j.sources and not j.reward_models:
            raise ValueError("judging.reward_models: judging.sources has 'reward_model' but no "
                             "reward model directory is listed")
        if "llm" in j.sources and not (self.llm_judge.base_url and self.llm_judge.model):
            raise ValueError("llm_judge.base_url: judging.sources has 'llm'; set llm_judge."
                             "base_url (an OpenAI-compatible URL, or 'embedded') and "
                             "llm_judge.model")
        gold = self.loop.gold
        if gold:
            known = self.source_names()
            if gold not in known:
                raise ValueError(f"loop.gold: {gold!r} is not a configured source; use one of "
                                 f"{known} (verifier:NAME, rm:NAME or llm:NAME)")
        return self

    def source_names(self) -> list[str]:
        """The machine sources this config judges with (ensembles excluded)."""
        from pipeline.judging.naming import source_names

        return source_names(self)

    def to_toml(self) -> str:
        lines: list[str] = []
        for section, values in self.model_dump().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    def fingerprint(self, *sections: str) -> str:
        """A short stable hash of the named sections."""
        payload = {s: self.model_dump()[s] for s in sorted(sections)}
        return stable_hash(payload)


def stable_hash(payload: Any, length: int = 10) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()
                          ).hexdigest()[:length]


def _format(err: ValidationError, set_keys: set[str]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            section = loc.split(".")[0]
            known = sorted(_section_fields(section))
            where = f"--set {loc}" if loc in set_keys else loc
            lines.append(f"{where}: unknown key; known keys of [{section}]: {known}")
            continue
        if msg.split(":")[0] in _all_field_names():  # a validator that names its own field
            lines.append(msg)
            continue
        got = e.get("input")
        prefix = "" if msg.startswith("got ") or isinstance(got, dict) else f"got {got!r}; "
        lines.append(f"{loc}: {prefix}{msg}" if loc else msg)
    return "; ".join(lines)


def _section_fields(section: str) -> list[str]:
    field = Config.model_fields.get(section)
    return list(field.annotation.model_fields) if field else []


def _all_field_names() -> set[str]:
    return {f"{s}.{k}" for s in Config.model_fields for k in _section_fields(s)}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML config (default: the embedded demo), apply dotted overrides, validate."""
    path = Path(path) if path else DEMO_CONFIG
    if not path.is_file():
        raise ConfigError(f"--config: no such file {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config: {path} is not valid TOML: {err}") from err
    known = set(Config.model_fields)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown} in {path}; known: {sorted(known)}")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in known or not key:
            raise ConfigError(f"--set {dotted}: unknown section {section!r}; known sections: "
                              f"{sorted(known)}")
        raw.setdefault(section, {})[key] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err, set(overrides or {}))) from None
