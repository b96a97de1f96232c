"""The offline groupwise training loop.

Built on ``accelerate``: the same code runs on the CPU, one GPU, or many through
``accelerate launch`` (DDP/FSDP/DeepSpeed); nothing here is home-made for distribution.

Order of work, chosen so that one model is in memory at a time:
1. read the ranked groups and tokenise them;
2. reference log-probs from the Parquet cache, or computed once with the reference model,
   which is then freed (skipped entirely when ``train.reference_free``);
3. train the policy on whole groups (prompt encoded once per group), checkpointing
   atomically every ``checkpoint_every`` optimizer steps;
4. save a normal Hugging Face model directory that vLLM loads for the next round.

Resume: the data order of every epoch is a pure function of (seed, epoch), and a checkpoint
stores model, optimizer, scheduler, RNG states and the position (epoch, batch, step), so a
killed run restarted with ``resume=True`` continues exactly where the last complete
checkpoint left it; metrics lines written after that checkpoint are dropped and rewritten.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.atomic import atomic_dir, write_text_atomic
from pipeline.config import Config
from pipeline.progress import progress_bar
from trainers.data import (
    TokenizedGroup,
    collate,
    groups_fingerprint,
    load_ranked_groups,
    plan_batches,
    tokenize_groups,
    why_no_training_groups,
)
from trainers.losses import LossType, groupwise_loss, ranking_accuracy
from trainers.reference import (
    cached_reference_logps,
    group_logps_by_candidate,
    load_for_inference,
)

CKPT_PREFIX = "step-"


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


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (a ``.tmp`` directory is an interrupted save)."""
    done = [p for p in Path(ckpt_dir).glob(f"{CKPT_PREFIX}*")
            if p.is_dir() and not p.name.endswith(".tmp") and (p / "position.json").exists()]
    return max(done, key=lambda p: int(p.name[len(CKPT_PREFIX):]), default=None)


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _attach_reference(groups: list[TokenizedGroup], ref: dict[str, float] | None) -> list:
    if ref is None:
        return [None] * len(groups)
    return [[ref[c] for c in g.candidate_ids] for g in groups]


def _ref_tensor(values: list, k: int) -> torch.Tensor:
    out = torch.zeros(len(values), k, dtype=torch.float32)
    for i, row in enumerate(values):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def train(cfg: Config, workdir: Path, rounds: list[int], policy_dir: Path, ref_dir: Path,
          output_dir: Path, resume: bool = False, show_progress: bool = True,
          overwrite: bool = False) -> TrainResult:
    """Train ``policy_dir`` on the ranked groups of ``rounds`` into ``output_dir``. An
    existing model there is replaced only with ``overwrite`` (the loop's own re-runs, or
    ``grpo train --force``): it may be what later rounds were generated with."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = cfg.train
    loss_type = LossType(t.loss)
    started = time.perf_counter()
    torch.set_num_threads(t.threads)
    output_dir = Path(output_dir)
    ckpt_dir = output_dir.with_name(output_dir.name + ".checkpoints")
    metrics_path = ckpt_dir / "metrics.jsonl"
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
    groups = tokenize_groups(ranked, tokenizer.eos_token_id)

    ref_path, ref_hit, ref_values = None, False, None
    if not t.reference_free:
        def compute() -> dict[str, float]:
            ref_model = load_for_inference(ref_dir)
            values = group_logps_by_candidate(ref_model, groups, pad_id, t.groups_per_batch,
                                              t.max_batch_tokens)
            del ref_model
            return values

        ref_values, ref_path, ref_hit = cached_reference_logps(
            Path(workdir) / "cache", ref_dir, groups_fingerprint(ranked), compute)
    refs = _attach_reference(groups, ref_values)

    accelerator = Accelerator(gradient_accumulation_steps=t.grad_accum,
                              mixed_precision=_mixed_precision(t.mixed_precision),
                              cpu=not torch.cuda.is_available())
    set_seed(t.seed)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    optim = torch.optim.AdamW(model.parameters(), lr=t.learning_rate)
    batches_per_epoch = len(plan_batches(groups, epoch_order(len(groups), t.seed, 0),
                                         t.groups_per_batch, t.max_batch_tokens))
    total_steps = math.ceil(batches_per_epoch * t.epochs / t.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, t.warmup_steps)))
    model, optim, sched = accelerator.prepare(model, optim, sched)

    epoch, start_batch, step, resumed_from = 0, 0, 0, 0
    ckpt = latest_checkpoint(ckpt_dir) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        pos = json.loads((ckpt / "position.json").read_text())
        epoch, start_batch, step = pos["epoch"], pos["batch"], pos["step"]
        resumed_from = step
        _truncate_metrics(metrics_path, step)
    elif not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg.to_toml(), ckpt_dir / "train.config.toml")

    first_loss = last_loss = float("nan")
    model.train()
    with progress_bar(show_progress) as bar, open(metrics_path, "a") as metrics:
        job = bar.add_task("training", total=total_steps, completed=step)
        while epoch < t.epochs:
            batches = plan_batches(groups, epoch_order(len(groups), t.seed, epoch),
                                   t.groups_per_batch, t.max_batch_tokens)
            for b in range(start_batch, len(batches)):
                idx = batches[b]
                batch, ranks, weights = collate([groups[i] for i in idx], pad_id)
                ref = None if ref_values is None else _ref_tensor([refs[i] for i in idx],
                                                                  ranks.shape[1])
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        logps = _logps(model, batch, accelerator)
                    losses, rewards = groupwise_loss(loss_type, logps.float(), ref, ranks,
                                                     t.beta, weights)
                    loss = losses.mean()
                    accelerator.backward(loss)
                    optim.step()
                    sched.step()
                    optim.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                step += 1
                row = _metrics(step, epoch, loss, rewards, ranks, logps, ref, t.beta, sched)
                first_loss = row["loss"] if math.isnan(first_loss) else first_loss
                last_loss = row["loss"]
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                bar.update(job, advance=1,
                           description=f"training loss={row['loss']:.4f} acc={row['rank_acc']:.2f}")
                if step % t.checkpoint_every == 0:
                    _save_checkpoint(accelerator, ckpt_dir, step, epoch, b + 1, t.keep_checkpoints)
            epoch, start_batch = epoch + 1, 0

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(accelerator.unwrap_model(model), tokenizer, output_dir, cfg)
    result = TrainResult(str(output_dir), step, len(groups), first_loss, last_loss,
                         str(ref_path) if ref_path else None, ref_hit,
                         round(time.perf_counter() - started, 1), resumed_from)
    write_text_atomic(json.dumps(asdict(result), indent=2), ckpt_dir / "result.json")
    return result


def _logps(model, batch, accelerator) -> torch.Tensor:
    from trainers.logprobs import GroupBatch, group_logps

    device = accelerator.device
    moved = GroupBatch(*(x.to(device) for x in (batch.prompt_ids, batch.prompt_mask,
                                                batch.completion_ids, batch.completion_mask)))
    return group_logps(model, moved).cpu()


def _metrics(step, epoch, loss, rewards, ranks, logps, ref, beta, sched) -> dict:
    valid = ranks >= 0
    acc = ranking_accuracy(rewards, ranks)
    # Best and worst tier of each group: the reward margin the loss is opening up.
    big = torch.finfo(rewards.dtype).max
    best = torch.where(valid & (ranks == ranks.masked_fill(~valid, 10**6).min(1, True).values),
                       rewards, torch.full_like(rewards, -big)).max(1).values
    worst = torch.where(valid & (ranks == ranks.max(1, True).values), rewards,
                        torch.full_like(rewards, big)).min(1).values
    margin = (best - worst)[torch.isfinite(best - worst)]
    row = {"step": step, "epoch": epoch, "loss": round(float(loss.detach()), 6),
           "reward_margin": round(float(margin.mean()), 6) if margin.numel() else None,
           "rank_acc": round(float(acc[~torch.isnan(acc)].mean()), 6)
           if (~torch.isnan(acc)).any() else float("nan"),
           "lr": sched.get_last_lr()[0]}
    if ref is not None:
        # Mean of log pi - log pi_ref over the sampled completions: a KL estimate, valid
        # while the data is (close to) samples of the current policy.
        diff = (logps.detach().float() - ref)[valid]
        row["kl_estimate"] = round(float(diff.mean()), 6)
    return row


def _save_checkpoint(accelerator, ckpt_dir: Path, step: int, epoch: int, next_batch: int,
                     keep: int) -> None:
    """Write into ``step-N.tmp``, then rename: a directory without .tmp is complete."""
    with atomic_dir(ckpt_dir / f"{CKPT_PREFIX}{step:07d}") as tmp:
        accelerator.save_state(str(tmp))
        write_text_atomic(json.dumps({"epoch": epoch, "batch": next_batch, "step": step}),
                          tmp / "position.json")
    complete = sorted(p for p in ckpt_dir.glob(f"{CKPT_PREFIX}*") if not p.name.endswith(".tmp"))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text_atomic("".join(ln + "\n" for ln in keep), path)


def _save_model(model, tokenizer, output_dir: Path, cfg: Config) -> None:
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "train.config.toml").write_text(cfg.to_toml())
