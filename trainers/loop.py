"""The offline groupwise training loop.

Built on ``accelerate``: the same code runs on the CPU, one GPU, or many through
``accelerate launch`` (DDP/FSDP/DeepSpeed); nothing here is home-made for distribution.

``train`` reads as its parts, one at a time:
1. ``setup``: the ranked groups, tokenised as sampled; the accelerator;
2. ``prepare_reference``: reference log-probs from the Parquet cache or computed once (by
   shares, one per process, gathered), or with LoRA the base itself with the adapter off;
3. ``run_epochs``: optimizer steps of ``groups_per_batch x grad_accum`` groups in an order
   fixed by (seed, epoch); each process trains on its own share of every step
   (``trainers/step.py``: token-budget passes, the step's loss normalised over the whole
   step); metrics reduced across processes and written by the main process;
   checkpoints every ``checkpoint_every`` steps (``trainers/checkpoints.py``);
4. ``save_trained``: the model directory vLLM loads for the next round (with LoRA, the
   adapter and the merged model; ``trainers/policy.py``).
Only the main process writes files; the others wait for it at each write.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.atomic import write_text_atomic
from pipeline.config import Config
from pipeline.progress import progress_bar
from trainers import tracking
from trainers.checkpoints import (
    Position,
    latest_checkpoint,  # noqa: F401  (re-exported: tests and flows find checkpoints here)
    restore,
    save_checkpoint,
    truncate_metrics,
)
from trainers.data import (
    TokenizedGroup,
    epoch_order,
    groups_fingerprint,
    load_ranked_groups,
    plan_steps,
    rank_share,
    tokenize_groups,
    why_no_training_groups,
)
from trainers.logprobs import group_logps_auto, group_logps_packed
from trainers.losses import LossType
from trainers.policy import load_policy, save_merged, save_trained
from trainers.reference import (
    adapter_disabled_reference,
    cached_reference,
    group_logps_by_candidate,
    load_for_inference,
    no_reference,
    shared_reference_logps,
)
from trainers.step import StepContext, StepStats, train_step


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    groups: int
    first_loss: float
    last_loss: float
    reference_cache: str | None
    reference_cache_hit: bool
    seconds: float
    resumed_from_step: int
    world_size: int = 1
    groups_per_rank: list[int] | None = None  # groups each process trained on per epoch
    reference: str = "cached"  # cached | adapter_disabled | none
    adapter_dir: str | None = None
    # wall seconds of each part: setup (data, tokenizer), reference (pass or cache read),
    # steps (the optimizer steps of this run), save (model, adapter, merge)
    phase_seconds: dict | None = None


@dataclass
class Run:
    """What ``setup`` resolves once: paths, data, tokenizer and the accelerator."""

    cfg: Config
    workdir: Path
    policy_dir: Path
    ref_dir: Path
    output_dir: Path
    groups: list[TokenizedGroup]
    data_fingerprint: str
    tokenizer: object
    pad_id: int
    accelerator: object

    @property
    def ckpt_dir(self) -> Path:
        return self.output_dir.with_name(self.output_dir.name + ".checkpoints")

    @property
    def metrics_path(self) -> Path:
        return self.ckpt_dir / "metrics.jsonl"

    @property
    def groups_per_step(self) -> int:
        return self.cfg.train.groups_per_batch * self.cfg.train.grad_accum

    def steps_of_epoch(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return plan_steps(epoch_order(len(self.groups), t.seed, epoch), self.groups_per_step)


def train(cfg: Config, workdir: Path, rounds: list[int], policy_dir: Path, ref_dir: Path,
          output_dir: Path, resume: bool = False, show_progress: bool = True,
          overwrite: bool = False) -> TrainResult:
    """Train ``policy_dir`` on the ranked groups of ``rounds`` into ``output_dir``. An
    existing model there is replaced only with ``overwrite`` (the loop's own re-runs, or
    ``grpo train --force``): it may be what later rounds were generated with."""
    started = time.perf_counter()
    clock = _Phases()
    run = setup(cfg, workdir, rounds, policy_dir, ref_dir, output_dir, resume, overwrite)
    clock.lap("setup")
    t, acc = cfg.train, run.accelerator
    loaded: list = []

    def policy():  # loaded after a separate reference model is freed: one model at a time
        if not loaded:
            loaded.append(load_policy(policy_dir, t, acc.local_process_index))
        return loaded[0]

    logps_fn = training_logps_fn(cfg, acc)
    reference, ref_info = prepare_reference(run, policy, logps_fn, clock)
    clock.lap("reference")
    model = policy()
    loaded.clear()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                              lr=t.learning_rate, **_fused(model))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, t.warmup_steps)))
    model, optim, sched = acc.prepare(model, optim, sched)
    if ref_info["reference"] == "adapter_disabled":  # the prepared model, adapter switched off
        reference = adapter_disabled_reference(model, acc.unwrap_model(model), logps_fn)
    position = start_or_resume(run, resume)
    resumed_from = position.step
    ctx = StepContext(model, acc, run.groups, logps_fn, reference, LossType(t.loss), t.beta,
                      t.max_batch_tokens, run.pad_id)
    tracking.start_run(acc, t, run.output_dir.name, cfg)
    clock.lap("setup")  # loading the policy and preparing it count as setup
    losses = run_epochs(run, ctx, optim, sched, position, show_progress)
    clock.lap("steps")
    save_trained(acc, model, run.tokenizer, cfg, policy_dir, run.output_dir)
    # Free the training model before the merge loads the base again (accelerate keeps
    # references to what it prepared; the reference closure holds the model too).
    del model, optim, sched, ctx, reference
    acc.free_memory()
    gc.collect()
    if t.lora_rank and acc.is_main_process:
        save_merged(policy_dir, run.output_dir, cfg)
    acc.wait_for_everyone()
    clock.lap("save")
    if t.report_to:
        acc.end_training()
    result = TrainResult(
        str(run.output_dir), losses["steps"], len(run.groups), losses["first"], losses["last"],
        ref_info["path"], ref_info["hit"], round(time.perf_counter() - started, 1),
        resumed_from, acc.num_processes, _groups_per_rank(run), ref_info["reference"],
        str(run.output_dir.with_name(run.output_dir.name + ".adapter")) if t.lora_rank else None,
        clock.rounded())
    if acc.is_main_process:
        write_text_atomic(json.dumps(asdict(result), indent=2), run.ckpt_dir / "result.json")
    acc.wait_for_everyone()
    return result


class _Phases:
    """Wall time per part of a run, accumulated by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def setup(cfg: Config, workdir: Path, rounds: list[int], policy_dir: Path, ref_dir: Path,
          output_dir: Path, resume: bool, overwrite: bool) -> Run:
    """Refuse to replace a model unless told; read and tokenise the groups; the accelerator."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import AutoTokenizer

    t = cfg.train
    torch.set_num_threads(t.threads)
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and not (overwrite or resume):
        raise ValueError(f"train: {output_dir} already holds a model (later rounds may have "
                         "been generated with it); pass --force to replace it, or --output "
                         "to write elsewhere")
    ranked = load_ranked_groups(workdir, rounds)
    if not ranked:
        raise ValueError(why_no_training_groups(workdir, rounds))
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(t.mixed_precision), cpu=not torch.cuda.is_available(),
        # The scheduler steps once per optimizer step whatever the number of processes
        # (the global batch is fixed in groups, not per process).
        step_scheduler_with_optimizer=False,
        # Language models' buffers (rotary frequencies) are constants: broadcasting them at
        # every forward would be a collective that processes with different numbers of
        # passes per step could not match.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        **tracking.accelerator_kwargs(t, workdir))
    set_seed(t.seed)
    return Run(cfg, Path(workdir), Path(policy_dir), Path(ref_dir), output_dir,
               tokenize_groups(ranked, tokenizer.eos_token_id), groups_fingerprint(ranked),
               tokenizer, pad_id, accelerator)


def _fused(model) -> dict:
    """AdamW's fused kernel where torch has one for the device (CUDA, and the CPU since
    torch 2.4): one pass over the parameters, no per-step temporary copies of them."""
    try:
        device = next(model.parameters()).device.type
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        return {"fused": True} if device in _get_fused_kernels_supported_devices() else {}
    except (ImportError, StopIteration):
        return {}


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def training_logps_fn(cfg: Config, accelerator):
    """The packed form under gradient checkpointing (the KV-cache form needs a cache that
    checkpointed layers drop); otherwise whichever form costs less on each batch."""
    return group_logps_packed if cfg.train.gradient_checkpointing else group_logps_auto


def _same_model(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def prepare_reference(run: Run, policy, logps_fn, clock: _Phases | None = None) -> tuple:
    """(reference function, info). Reference-free: none. LoRA against its own base without
    the cache: the policy with the adapter disabled, each step. Otherwise the cache, filled
    on a miss by the policy's base (LoRA: adapter disabled, no second model) or by the
    reference model loaded for that pass alone and freed before ``policy()`` loads the
    policy."""
    t, acc = run.cfg.train, run.accelerator
    if t.reference_free:
        return no_reference, {"reference": "none", "path": None, "hit": False}
    own_base = bool(t.lora_rank) and _same_model(run.ref_dir, run.policy_dir)
    if own_base and not t.reference_cache:
        return None, {"reference": "adapter_disabled", "path": None, "hit": False}

    def loaded(model):  # hashing and loading models count as setup, not reference work
        if clock is not None:
            clock.lap("setup")
        return model

    def compute_share(share: list[int]) -> dict[str, float]:
        if own_base:
            model = loaded(policy().to(acc.device))
            with model.disable_adapter():
                return group_logps_by_candidate(model, run.groups, run.pad_id,
                                                t.groups_per_batch, t.max_batch_tokens, share)
        ref_model = loaded(load_for_inference(run.ref_dir))
        values = group_logps_by_candidate(ref_model, run.groups, run.pad_id,
                                          t.groups_per_batch, t.max_batch_tokens, share)
        del ref_model
        gc.collect()
        return values

    values, path, hit = shared_reference_logps(acc, run.workdir / "cache", run.ref_dir,
                                               run.data_fingerprint, len(run.groups),
                                               compute_share)
    return cached_reference(values), {"reference": "cached", "path": str(path), "hit": hit}


def start_or_resume(run: Run, resume: bool) -> Position:
    """The position to start from: the newest complete checkpoint with ``resume``, else the
    beginning (old checkpoints and metrics removed). Writes the resolved config."""
    acc = run.accelerator
    position = restore(acc, run.ckpt_dir) if resume else None
    if acc.is_main_process:
        if not resume:
            shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        # Lines written after the checkpoint (or by a run that never reached one) go.
        truncate_metrics(run.metrics_path, position.step if position else 0)
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.cfg.to_toml(), run.ckpt_dir / "train.config.toml")
    acc.wait_for_everyone()
    return position or Position()


def run_epochs(run: Run, ctx: StepContext, optim, sched, position: Position,
               show_progress: bool) -> dict:
    """Optimizer steps from ``position`` to the end; returns first/last loss and steps."""
    t, acc = run.cfg.train, run.accelerator
    main = acc.is_main_process
    total = sum(len(run.steps_of_epoch(e)) for e in range(t.epochs))
    first = last = float("nan")
    ctx.model.train()
    with progress_bar(show_progress and main) as bar, \
            open(run.metrics_path, "a") if main else _nowhere() as metrics:
        job = bar.add_task("training", total=total, completed=position.step)
        while position.epoch < t.epochs:
            steps = run.steps_of_epoch(position.epoch)
            while position.step_in_epoch < len(steps):
                step_groups = steps[position.step_in_epoch]
                share = rank_share(step_groups, acc.process_index, acc.num_processes)
                stats = train_step(ctx, step_groups, share)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                position.step += 1
                position.step_in_epoch += 1
                row = step_metrics(acc, stats, len(step_groups), position, sched)
                first = row["loss"] if math.isnan(first) else first
                last = row["loss"]
                if main:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    bar.update(job, advance=1, description=f"training loss={row['loss']:.4f}")
                tracking.log_step(acc, t, row)
                if position.step % t.checkpoint_every == 0:
                    save_checkpoint(acc, run.ckpt_dir, position, t.keep_checkpoints)
            position.epoch += 1
            position.step_in_epoch = 0
    return {"first": first, "last": last, "steps": position.step}


class _nowhere:
    """A metrics file for processes that do not write one."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def step_metrics(acc, stats: StepStats, n_step: int, position: Position, sched) -> dict:
    """The step's metrics over every process (sums reduced, then divided)."""
    if acc.num_processes > 1:
        total = acc.reduce(stats.as_tensor().to(acc.device), reduction="sum").cpu()
        stats = StepStats.from_tensor(total)
    return {"step": position.step, "epoch": position.epoch, **stats.row(n_step),
            "lr": sched.get_last_lr()[0]}


def _groups_per_rank(run: Run) -> list[int]:
    """Groups each process trains on per epoch (the same every epoch)."""
    acc = run.accelerator
    counts = [0] * acc.num_processes
    for step in run.steps_of_epoch(0):
        for r in range(acc.num_processes):
            counts[r] += len(rank_share(step, r, acc.num_processes))
    return counts
