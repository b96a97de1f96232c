"""Reference log-probs: cached in Parquet per (reference model, data), or, with LoRA, read
from the policy itself with its adapter disabled.

Cached: training then holds one model in memory instead of two. The cache file's name
carries a content fingerprint of the reference model (every file, hashed once and cached by
path, size and mtime) and of the data, so a changed model or dataset never reuses stale
numbers. Under several processes each computes the log-probs of its own share of the groups
and the shares are gathered; the main process writes the file.

With LoRA the base model is in memory anyway: ``adapter_disabled_reference`` runs it with
the adapter switched off, a forward pass without gradients per micro-batch and no model
loaded beside the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import torch

from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.fingerprints import model_fingerprint
from pipeline.schema import Column, Table
from trainers.data import TokenizedGroup, collate, plan_batches
from trainers.logprobs import GroupBatch, group_logps_auto

REF_CACHE = Table(
    "ref_logps", "Reference-model log-probs of each candidate, keyed by model and data hash.",
    (Column("candidate_id", pa.string(), "the candidate"),
     Column("ref_logp", pa.float64(), "summed log-prob of its completion under the reference")),
    key=("candidate_id",),
)


def load_for_inference(model_dir: Path):
    """A causal LM for scoring only (reference pass, evaluation): on the accelerator when
    there is one, in the dtype its weights were saved in (never fp32 copies of a bf16 7B)."""
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()


@torch.no_grad()
def group_logps_by_candidate(model, groups: list[TokenizedGroup], pad_id: int,
                             groups_per_batch: int, max_tokens: int,
                             only: list[int] | None = None) -> dict[str, float]:
    """Summed completion log-probs under ``model`` (prompt once per group), by candidate id:
    the reference pass of training, and the policy/base passes of evaluation. ``only``: the
    indices of the groups to score (default all)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    order = list(range(len(groups))) if only is None else list(only)
    for idx in plan_batches(groups, order, groups_per_batch, max_tokens):
        batch, ranks, _ = collate([groups[i] for i in idx], pad_id)
        logps = group_logps_auto(model, batch.to(device))
        for row, i in enumerate(idx):
            for j, cid in enumerate(groups[i].candidate_ids):
                out[cid] = float(logps[row, j])
    model.train(was_training)
    return out


def cache_path(cache_dir: Path, ref_dir: Path, data_fingerprint: str) -> Path:
    fp = model_fingerprint(ref_dir, Path(cache_dir) / "fingerprints.json")
    return Path(cache_dir) / f"ref_logps-{fp}-{data_fingerprint}.parquet"


def read_cache(path: Path) -> dict[str, float]:
    t = read_parquet_checked(path, REF_CACHE)
    return dict(zip(t.column("candidate_id").to_pylist(), t.column("ref_logp").to_pylist(),
                    strict=True))


def write_cache(path: Path, values: dict[str, float]) -> None:
    table = pa.table({"candidate_id": list(values), "ref_logp": list(values.values())},
                     schema=REF_CACHE.arrow_schema)
    write_parquet_atomic(table, path, REF_CACHE)


def shared_reference_logps(accelerator, cache_dir: Path, ref_dir: Path, data_fingerprint: str,
                           n_groups: int,
                           compute_share: Callable[[list[int]], dict[str, float]]
                           ) -> tuple[dict[str, float], Path, bool]:
    """(logps by candidate id, cache path, hit?) on every process. On a miss each process
    computes ``compute_share(its group indices)``; the shares are gathered and the main
    process writes the cache."""
    from accelerate.utils import broadcast_object_list, gather_object

    decided = [None, None]
    if accelerator.is_main_process:  # one process hashes the model and looks for the file
        path = cache_path(cache_dir, ref_dir, data_fingerprint)
        decided = [str(path), path.exists()]
    if accelerator.num_processes > 1:
        broadcast_object_list(decided)
    path, hit = Path(decided[0]), bool(decided[1])
    if hit:
        return read_cache(path), path, True
    share = list(range(accelerator.process_index, n_groups, accelerator.num_processes))
    values = compute_share(share)
    if accelerator.num_processes > 1:
        merged: dict[str, float] = {}
        for part in gather_object([values]):
            merged.update(part)
        values = merged
    if accelerator.is_main_process:
        write_cache(path, values)
    accelerator.wait_for_everyone()
    return values, path, False


def cached_reference(values: dict[str, float]) -> Callable[[list[TokenizedGroup], GroupBatch],
                                                           torch.Tensor]:
    """Reference log-probs of a pass's candidates, looked up by candidate id."""
    def reference(groups: list[TokenizedGroup], batch: GroupBatch) -> torch.Tensor:
        out = torch.zeros(batch.completion_ids.shape[:2], dtype=torch.float32)
        for i, g in enumerate(groups):
            out[i, : len(g.candidate_ids)] = torch.tensor([values[c] for c in g.candidate_ids])
        return out.to(batch.completion_ids.device)

    return reference


def adapter_disabled_reference(model, peft_model, logps_fn
                               ) -> Callable[[list[TokenizedGroup], GroupBatch], torch.Tensor]:
    """The base model's log-probs, from the LoRA policy with its adapter switched off.
    ``model`` is what accelerate prepared (called, so FSDP/DDP wrappers work); ``peft_model``
    the unwrapped PeftModel whose adapter is disabled for the call."""
    @torch.no_grad()
    def reference(groups: list[TokenizedGroup], batch: GroupBatch) -> torch.Tensor:
        was_training = peft_model.training
        peft_model.eval()  # no dropout in the reference
        try:
            with peft_model.disable_adapter():
                return logps_fn(model, batch).float()
        finally:
            peft_model.train(was_training)

    return reference


def no_reference(groups: list[TokenizedGroup], batch: GroupBatch) -> None:
    return None
