"""The ranking stage for a round: read judgments, merge chunk by chunk, write the tables.

Writes ``rankings``, ``groups``, ``cycles`` and ``agreement`` (one file each per round,
atomically) and ``source_weights.json`` (the weights used, estimated ones with the agreement
they came from). Optionally, weights are estimated from agreement with a trusted source:
w = clip(log(acc / (1 - acc)), 0, 5), the log-odds a source's vote carries if it agrees with
the trusted source with probability acc (chance gives 0).
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from pipeline.atomic import write_parquet_atomic, write_text_atomic
from pipeline.config import RankConfig
from pipeline.consensus.merge import merge_chunk, source_weights
from pipeline.consensus.preferences import PreferenceData, build_preferences
from pipeline.schema import AGREEMENT, CYCLES, GROUPS, RANKINGS
from pipeline.store import round_dir


@dataclass
class RankSummary:
    round: int
    groups: int
    statuses: dict[str, int]
    weights: dict[str, float]
    estimated_from: str | None


def read_round(workdir: Path, round_: int, judgment_files: list[Path] | None = None
               ) -> tuple[pl.LazyFrame, pl.DataFrame]:
    rdir = round_dir(workdir, round_)
    shards = sorted((rdir / "candidates").glob("*.parquet"))
    if not shards:
        raise ValueError(f"round {round_} has no candidates in {rdir}; run `grpo generate` "
                         "first")
    cands = pl.read_parquet(shards, columns=["round", "group_id", "candidate_id",
                                             "candidate_idx"])
    jfiles = sorted(judgment_files) if judgment_files is not None else \
        sorted((rdir / "judgments").glob("*.parquet"))
    if not jfiles:
        raise ValueError(f"round {round_} has no judgments; run `grpo judge` first")
    return pl.scan_parquet(jfiles), cands


def estimate_weights(data: PreferenceData, trusted_glob: str, chunk: int) -> dict[str, dict]:
    """Per source: agreement with the trusted source(s) on strictly ordered pairs."""
    trusted = [i for i, s in enumerate(data.sources) if fnmatch.fnmatchcase(s, trusted_glob)]
    if not trusted:
        raise ValueError(f"rank.estimate_weights_from: no source matches {trusted_glob!r}; "
                         f"sources are {data.sources}")
    agree = np.zeros(len(data.sources))
    total = np.zeros(len(data.sources))
    for lo in range(0, len(data), chunk):
        p = data.chunk(lo, min(lo + chunk, len(data)))
        ref = torch.nanmean(p[:, trusted], dim=1)  # several annotators: their mean verdict
        ref_strict = ~torch.isnan(ref) & (ref != 0.5)
        for s in range(len(data.sources)):
            mine = p[:, s]
            both = ref_strict & ~torch.isnan(mine) & (mine != 0.5)
            agree[s] += float(((mine > 0.5) == (ref > 0.5))[both].sum())
            total[s] += float(both.sum())
    out = {}
    for s, name in enumerate(data.sources):
        if s in trusted:
            continue
        acc = (agree[s] + 1) / (total[s] + 2)  # Laplace: no evidence gives 0.5, weight 0
        out[name] = {"agreement": round(acc, 4), "pairs": int(total[s]),
                     "weight": round(min(5.0, max(0.0, math.log(acc / (1 - acc)))), 4)}
    return out


def rank_round(workdir: Path, round_: int, cfg: RankConfig,
               judgment_files: list[Path] | None = None,
               zero_weight: list[str] | tuple[str, ...] = ()) -> RankSummary:
    """``judgment_files``: the files to merge (default: every judgment file of the round);
    ``zero_weight``: sources that never shape the consensus (the gold source)."""
    judgments, cands = read_round(workdir, round_, judgment_files)
    data = build_preferences(judgments, cands)
    estimated = estimate_weights(data, cfg.estimate_weights_from, cfg.chunk_groups) \
        if cfg.estimate_weights_from else {}
    w = source_weights(data.sources, cfg, {k: v["weight"] for k, v in estimated.items()},
                       zero=zero_weight)
    weights = torch.from_numpy(w)

    rankings, groups, cycles, agreement = [], [], [], []
    for lo in range(0, len(data), cfg.chunk_groups):
        hi = min(lo + cfg.chunk_groups, len(data))
        res = merge_chunk(data.chunk(lo, hi), torch.from_numpy(data.n_candidates[lo:hi]),
                          weights, cfg)
        rankings.append(_rankings(data, lo, hi, res))
        groups.append(_groups(data, lo, hi, res))
        cycles.append(_cycles(data, lo, hi, res))
        agreement.append(_agreement(data, lo, hi, res))

    rdir = round_dir(workdir, round_)
    for name, spec, parts in (("rankings", RANKINGS, rankings), ("groups", GROUPS, groups),
                              ("cycles", CYCLES, cycles), ("agreement", AGREEMENT, agreement)):
        table = pa.concat_tables(parts) if parts else spec.empty()
        write_parquet_atomic(table, rdir / name / "consensus.parquet", spec)
    report = {"weights": dict(zip(data.sources, map(float, w), strict=True)),
              "estimated_from": cfg.estimate_weights_from or None, "estimates": estimated}
    write_text_atomic(json.dumps(report, indent=2), rdir / "source_weights.json")
    statuses = pl.from_arrow(pa.concat_tables(groups))["status"].value_counts() if groups \
        else pl.DataFrame({"status": [], "count": []})
    return RankSummary(round_, len(data), dict(zip(*statuses.to_dict(as_series=False).values(),
                                                    strict=True)),
                       report["weights"], report["estimated_from"])


def _rankings(data, lo, hi, res) -> pa.Table:
    n = data.n_candidates[lo:hi]
    present = torch.arange(data.k).unsqueeze(0) < torch.from_numpy(n).unsqueeze(1)
    ranks = res.ranks[present].numpy()  # row-major: group by group, by candidate index
    theta = res.theta[present].numpy().astype(np.float64)
    return pa.table({
        "round": pa.array(np.repeat(data.rounds[lo:hi], n), pa.int32()),
        "group_id": pa.array(np.repeat(data.group_ids[lo:hi], n), pa.string()),
        "candidate_id": pa.array(data.candidate_ids[data.offsets[lo]:data.offsets[hi]],
                                 pa.string()),
        "rank": pa.array(ranks, pa.int32()),
        "score": pa.array(np.where(ranks >= 0, theta, np.nan), pa.float64(),
                          from_pandas=True)})


def _groups(data, lo, hi, res) -> pa.Table:
    source_cyc = res.source_cycle.any(2).sum(1)
    return pa.table({
        "round": pa.array(data.rounds[lo:hi], pa.int32()),
        "group_id": pa.array(data.group_ids[lo:hi], pa.string()), "status": res.status,
        "n_sources": pa.array(res.n_sources.numpy(), pa.int32()),
        "n_cycles": pa.array(res.n_cycles.numpy(), pa.int32()),
        "n_source_cycles": pa.array(source_cyc.numpy(), pa.int32()),
        "agreement": pa.array([None if math.isnan(x) else x for x in res.mean_tau.tolist()],
                              pa.float64()),
        "weight": pa.array(res.weight.numpy(), pa.float64())})


def _cycles(data, lo, hi, res) -> pa.Table:
    rows = {"round": [], "group_id": [], "source": [], "members": [], "n_3cycles": []}
    cons = res.consensus_cycle.numpy()
    src = res.source_cycle.numpy()
    n3 = res.n_cycles.numpy()
    src3 = res.source_3cycles.numpy()
    g_idx, s_idx = np.nonzero(src.any(2))
    for row in np.nonzero(cons.any(1))[0]:
        _cycle_row(rows, data, lo + row, "consensus", cons[row], int(n3[row]))
    for row, s in zip(g_idx, s_idx, strict=True):
        _cycle_row(rows, data, lo + row, data.sources[s], src[row, s], int(src3[row, s]))
    return pa.Table.from_pydict(rows, schema=CYCLES.arrow_schema)


def _cycle_row(rows, data, g, source, mask, n3) -> None:
    rows["round"].append(int(data.rounds[g]))
    rows["group_id"].append(data.group_ids[g])
    rows["source"].append(source)
    ids = data.group_candidates(g)
    rows["members"].append([ids[i] for i in np.nonzero(mask)[0] if i < len(ids)])
    rows["n_3cycles"].append(n3)


def _agreement(data, lo, hi, res) -> pa.Table:
    s = len(data.sources)
    a_idx, b_idx = np.triu_indices(s, 1)
    tau = res.tau[:, a_idx, b_idx].numpy()
    pairs = res.tau_pairs[:, a_idx, b_idx].numpy()
    g_rows, p_cols = np.nonzero(pairs > 0)
    return pa.table({
        "round": pa.array(data.rounds[lo:hi][g_rows], pa.int32()),
        "group_id": pa.array(data.group_ids[lo:hi][g_rows], pa.string()),
        "source_a": pa.array(np.asarray(data.sources, dtype=object)[a_idx[p_cols]], pa.string()),
        "source_b": pa.array(np.asarray(data.sources, dtype=object)[b_idx[p_cols]], pa.string()),
        "pairs": pa.array(pairs[g_rows, p_cols], pa.int32()),
        "tau": pa.array(tau[g_rows, p_cols], pa.float64())})
