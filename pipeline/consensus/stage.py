"""The ranking stage for a round: read judgments, merge chunk by chunk, write the tables.

A round is ranked one batch of whole groups at a time (``inputs``), the next batch read in a
thread while this one is merged, and the tables are streamed to disk: memory is bounded by
the batch, not by the round. Writes ``rankings``, ``groups``, ``cycles``, ``agreement`` and
``source_groups`` (one file each per round, each replaced atomically when the round is done,
rows in group-id order) and ``source_weights.json`` (the weights used, estimated ones with
the agreement they came from). Optionally, weights are estimated from agreement with a
trusted source: w = clip(log(acc / (1 - acc)), 0, 5), the log-odds a source's vote carries
if it agrees with the trusted source with probability acc (chance gives 0).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline.allocation import reuse_freed_pages
from pipeline.atomic import parquet_writer_atomic, write_text_atomic
from pipeline.config import RankConfig
from pipeline.consensus.inputs import Batch, RoundInputs, plan_round
from pipeline.consensus.merge import merge_chunk, source_weights
from pipeline.consensus.preferences import PreferenceData, build_preferences
from pipeline.schema import AGREEMENT, CYCLES, GROUPS, RANKINGS, SOURCE_GROUPS
from pipeline.store import round_dir

OUTPUTS = {"rankings": RANKINGS, "groups": GROUPS, "cycles": CYCLES, "agreement": AGREEMENT,
           "source_groups": SOURCE_GROUPS}


@dataclass
class RankSummary:
    round: int
    groups: int
    statuses: dict[str, int]
    weights: dict[str, float]
    estimated_from: str | None


def estimate_weights(inputs: RoundInputs, trusted_glob: str, chunk: int) -> dict[str, dict]:
    """Per source: agreement with the trusted source(s) on strictly ordered pairs."""
    trusted = [i for i, s in enumerate(inputs.sources) if fnmatch.fnmatchcase(s, trusted_glob)]
    if not trusted:
        raise ValueError(f"rank.estimate_weights_from: no source matches {trusted_glob!r}; "
                         f"sources are {inputs.sources}")
    agree = np.zeros(len(inputs.sources))
    total = np.zeros(len(inputs.sources))
    for data in _preferences(inputs):
        for lo in range(0, len(data), chunk):
            p = data.chunk(lo, min(lo + chunk, len(data)))
            ref = torch.nanmean(p[:, trusted], dim=1)  # several annotators: their mean verdict
            ref_strict = ~torch.isnan(ref) & (ref != 0.5)
            for s in range(len(inputs.sources)):
                mine = p[:, s]
                both = ref_strict & ~torch.isnan(mine) & (mine != 0.5)
                agree[s] += float(((mine > 0.5) == (ref > 0.5))[both].sum())
                total[s] += float(both.sum())
    out = {}
    for s, name in enumerate(inputs.sources):
        if s in trusted:
            continue
        acc = (agree[s] + 1) / (total[s] + 2)  # Laplace: no evidence gives 0.5, weight 0
        out[name] = {"agreement": round(acc, 4), "pairs": int(total[s]),
                     "weight": round(min(5.0, max(0.0, math.log(acc / (1 - acc)))), 4)}
    return out


@reuse_freed_pages()  # large arrays per chunk: see ``pipeline.allocation``
def rank_round(workdir: Path, round_: int, cfg: RankConfig,
               judgment_files: list[Path] | None = None,
               zero_weight: list[str] | tuple[str, ...] = ()) -> RankSummary:
    """Rank every group of the round, one batch of whole shards at a time (see ``inputs``):
    memory is bounded by the batch, not the round. ``judgment_files`` (default: every file in
    the round's ``judgments/``) are the judgments that count; ``zero_weight``: sources that
    never shape the consensus (the gold source)."""
    inputs = plan_round(workdir, round_, judgment_files, cfg.chunk_groups)
    estimated = estimate_weights(inputs, cfg.estimate_weights_from, cfg.chunk_groups) \
        if cfg.estimate_weights_from else {}
    w = source_weights(inputs.sources, cfg, {k: v["weight"] for k, v in estimated.items()},
                       zero=zero_weight)
    weights = torch.from_numpy(w)

    rdir = round_dir(workdir, round_)
    statuses: Counter[str] = Counter()
    n_groups = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(_merge_threads())
        write = {name: stack.enter_context(parquet_writer_atomic(
            rdir / name / "consensus.parquet", spec)) for name, spec in OUTPUTS.items()}
        for data in _preferences(inputs):
            n_groups += len(data)
            for lo in range(0, len(data), cfg.chunk_groups):
                hi = min(lo + cfg.chunk_groups, len(data))
                res = merge_chunk(data.chunk(lo, hi),
                                  torch.from_numpy(data.n_candidates[lo:hi]), weights, cfg,
                                  data.pairwise_sources(lo, hi))
                statuses.update(res.status)
                write["rankings"](_rankings(data, lo, hi, res))
                write["groups"](_groups(data, lo, hi, res))
                write["cycles"](_cycles(data, lo, hi, res))
                write["agreement"](_agreement(data, lo, hi, res))
                write["source_groups"](_source_groups(data, lo, hi, res))
    report = {"weights": dict(zip(inputs.sources, map(float, w), strict=True)),
              "estimated_from": cfg.estimate_weights_from or None, "estimates": estimated}
    write_text_atomic(json.dumps(report, indent=2), rdir / "source_weights.json")
    return RankSummary(round_, n_groups, dict(statuses), report["weights"],
                       report["estimated_from"])


@contextlib.contextmanager
def _merge_threads() -> Iterator[None]:
    """torch's threads while merging: every core but the one reading the next batch. The
    merge is many small element-wise steps: a thread that has to wait for a busy core stalls
    every step (measured: 2 threads on 2 busy cores ran 2-5x slower than 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, len(os.sched_getaffinity(0)) - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _preferences(inputs: RoundInputs) -> Iterator[PreferenceData]:
    """Each batch's preferences, the next one read in a thread while the caller merges this
    one (Parquet decoding and numpy release the GIL): two batches in memory at most."""
    def read(batch: Batch) -> PreferenceData | None:
        cands = inputs.candidates(batch)
        return build_preferences(inputs.judgments(batch), cands, inputs.sources,
                                 inputs.reconciled, inputs.k) if cands.num_rows else None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rank-read") as pool:
        pending = [pool.submit(read, b) for b in inputs.batches[:1]]
        for nxt in [*inputs.batches[1:], None]:
            data = pending.pop().result()
            if nxt is not None:
                pending.append(pool.submit(read, nxt))
            if data is not None:
                yield data


def _take(array: pa.Array, positions: np.ndarray) -> pa.Array:
    return array.take(pa.array(positions, pa.int64()))


def _rankings(data, lo, hi, res) -> pa.Table:
    n = data.n_candidates[lo:hi]
    present = torch.arange(data.k).unsqueeze(0) < torch.from_numpy(n).unsqueeze(1)
    ranks = res.ranks[present].numpy()  # row-major: group by group, by candidate index
    theta = res.theta[present].numpy().astype(np.float64)
    return pa.table({
        "round": pa.array(np.repeat(data.rounds[lo:hi], n), pa.int32()),
        "group_id": _take(data.group_ids, np.repeat(np.arange(lo, hi), n)),
        "candidate_id": data.candidate_ids.slice(data.offsets[lo],
                                                 data.offsets[hi] - data.offsets[lo]),
        "rank": pa.array(ranks, pa.int32()),
        "score": pa.array(theta, pa.float64(), mask=ranks < 0)})  # excluded: null


def _groups(data, lo, hi, res) -> pa.Table:
    source_cyc = res.source_cycle.any(2).sum(1)
    mean_tau = res.mean_tau.numpy()
    return pa.table({
        "round": pa.array(data.rounds[lo:hi], pa.int32()),
        "group_id": data.group_ids.slice(lo, hi - lo), "status": res.status,
        "n_sources": pa.array(res.n_sources.numpy(), pa.int32()),
        "n_cycles": pa.array(res.n_cycles.numpy(), pa.int32()),
        "n_source_cycles": pa.array(source_cyc.numpy(), pa.int32()),
        "agreement": pa.array(mean_tau, pa.float64(), mask=np.isnan(mean_tau)),
        "weight": pa.array(res.weight.numpy(), pa.float64())})


def _cycles(data, lo, hi, res) -> pa.Table:
    """One row per (group, consensus or source) with a cycle, group by group, the consensus
    first, then the sources in order."""
    on_cycle = torch.cat([res.consensus_cycle.unsqueeze(1), res.source_cycle], 1).numpy()
    n3 = torch.cat([res.n_cycles.unsqueeze(1), res.source_3cycles], 1).numpy()
    rows, who = np.nonzero(on_cycle.any(2))  # [G, 1 + S] row-major: by group, consensus first
    n = data.n_candidates[lo:hi][rows]
    member_row, member_idx = np.nonzero(on_cycle[rows, who] & (np.arange(data.k) < n[:, None]))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(member_row, minlength=len(rows)))])
    members = _take(data.candidate_ids, data.offsets[lo + rows[member_row]] + member_idx)
    names = pa.array(["consensus", *data.sources], pa.string())
    return pa.table({
        "round": pa.array(data.rounds[lo:hi][rows], pa.int32()),
        "group_id": _take(data.group_ids, lo + rows),
        "source": _take(names, who),
        "members": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), members),
        "n_3cycles": pa.array(n3[rows, who], pa.int32())}, schema=CYCLES.arrow_schema)


def _agreement(data, lo, hi, res) -> pa.Table:
    s = len(data.sources)
    a_idx, b_idx = np.triu_indices(s, 1)
    ag = {name: t[:, a_idx, b_idx].numpy() for name, t in res.agreement._asdict().items()}
    g_rows, p_cols = np.nonzero(ag["pairs"] > 0)
    pick = {name: v[g_rows, p_cols] for name, v in ag.items()}
    names = pa.array(data.sources, pa.string())
    return pa.table({
        "round": pa.array(data.rounds[lo:hi][g_rows], pa.int32()),
        "group_id": _take(data.group_ids, lo + g_rows),
        "source_a": _take(names, a_idx[p_cols]),
        "source_b": _take(names, b_idx[p_cols]),
        "pairs": pa.array(pick["pairs"], pa.int32()),
        "tau": pa.array(pick["tau"], pa.float64()),
        "decided_pairs": pa.array(pick["decided"], pa.int32()),
        "tau_decided": pa.array(pick["tau_decided"], pa.float64(),
                                mask=pick["decided"] == 0)})


def _source_groups(data, lo, hi, res) -> pa.Table:
    """One row per (group, source with an opinion on it), group by group, sources in order:
    the facts ``sql/winner_disagreement.sql`` and ``score_distributions.sql`` aggregate, so
    that they read millions of rows rather than every judgment of the round."""
    w = res.sources
    judged = w.judged.numpy()
    g_rows, s_cols = np.nonzero(judged > 0)
    return pa.table({
        "round": pa.array(data.rounds[lo:hi][g_rows], pa.int32()),
        "group_id": _take(data.group_ids, lo + g_rows),
        "source": _take(pa.array(data.sources, pa.string()), s_cols),
        "judged": pa.array(judged[g_rows, s_cols], pa.int32()),
        "tied": pa.array(w.tied.numpy()[g_rows, s_cols], pa.int32()),
        "best": pa.array(w.best.numpy()[g_rows, s_cols], pa.int32()),
        "agrees": pa.array(w.agrees.numpy()[g_rows, s_cols], pa.bool_())})
