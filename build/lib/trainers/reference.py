"""Reference log-probs, computed once per (reference model, data) and cached in Parquet.

Training then holds one model in memory instead of two. The cache file's name carries a
content fingerprint of the reference model (every file, hashed once and cached by path,
size and mtime) and of the data, so a changed model or dataset never reuses stale numbers.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch

from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.fingerprints import model_fingerprint
from pipeline.schema import Column, Table
from trainers.data import TokenizedGroup, collate, plan_batches
from trainers.logprobs import group_logps

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
                             groups_per_batch: int, max_tokens: int) -> dict[str, float]:
    """Summed completion log-probs under ``model`` (prompt once per group), by candidate id:
    the reference pass of training, and the policy/base passes of evaluation."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    for idx in plan_batches(groups, list(range(len(groups))), groups_per_batch, max_tokens):
        batch, ranks, _ = collate([groups[i] for i in idx], pad_id)
        logps = group_logps(model, batch.to(device))
        for row, i in enumerate(idx):
            for j, cid in enumerate(groups[i].candidate_ids):
                out[cid] = float(logps[row, j])
    return out


def cached_reference_logps(cache_dir: Path, ref_dir: Path, data_fingerprint: str,
                           compute) -> tuple[dict[str, float], Path, bool]:
    """(logps by candidate id, cache path, hit?) ; ``compute()`` runs only on a miss."""
    fp = model_fingerprint(ref_dir, Path(cache_dir) / "fingerprints.json")
    path = Path(cache_dir) / f"ref_logps-{fp}-{data_fingerprint}.parquet"
    if path.exists():
        t = read_parquet_checked(path, REF_CACHE)
        return dict(zip(t.column("candidate_id").to_pylist(),
                        t.column("ref_logp").to_pylist(), strict=True)), path, True
    values = compute()
    table = pa.table({"candidate_id": list(values), "ref_logp": list(values.values())},
                     schema=REF_CACHE.arrow_schema)
    write_parquet_atomic(table, path, REF_CACHE)
    return values, path, False
