"""From judgment rows to dense per-source preferences ``P[g, s, i, j]``.

P = 1 where source s prefers candidate i to j in group g, 0 the other way, 0.5 for a tie,
NaN where s has no opinion. How each kind of source becomes pairwise:
- reconciled pairwise rows (``view = -1``, LLM judges) are used as they are: they already
  turn order-inconsistent verdicts into ties;
- other pairwise rows (humans) are averaged per pair over views;
- ``score`` rows (higher is better) are averaged over views per candidate and compared;
- ``rank`` rows (1 = best, humans) are compared the other way round.
Failed rows are never read. Scores are held as [G, S, k] and expanded to [G, S, k, k] one
chunk of groups at a time, which bounds memory at a million groups.

This runs once per judgment row (tens of millions per round), so it works on Arrow arrays
and numpy, not Python objects: group ids become codes by a hash lookup (``index_in``),
candidate indices are read from the digits that end each candidate id, and means over views
are sums and counts by ``bincount``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

KINDS = {"score": 0, "rank": 1, "pairwise": 2}  # any other kind is not read
JUDGMENT_COLUMNS = ["group_id", "candidate_id", "opponent_id", "source", "kind", "view",
                    "value", "status"]
CANDIDATE_COLUMNS = ["round", "group_id", "candidate_id", "candidate_idx"]


@dataclass
class PreferenceData:
    group_ids: pa.Array  # [G] string, sorted
    rounds: np.ndarray  # [G]
    n_candidates: np.ndarray  # [G] candidates in each group (from the candidates table)
    offsets: np.ndarray  # [G + 1] start of each group's candidates in candidate_ids
    candidate_ids: pa.Array  # flat, string: group by group, by candidate index
    sources: list[str]  # [S], sorted
    scores: np.ndarray  # [G, S, k] float32, NaN = no score
    pair_g: np.ndarray  # pairwise entries, one per (g, s, i, j), sorted by group
    pair_s: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_v: np.ndarray  # mean value from i's side: 1 = i better

    @property
    def k(self) -> int:
        return self.scores.shape[2]

    def __len__(self) -> int:
        return len(self.group_ids)

    def pairwise_sources(self, lo: int, hi: int) -> torch.Tensor:
        """[S] bool: sources with pairwise verdicts on groups lo..hi-1 (the only ones whose
        own verdicts can hold a cycle)."""
        a, b = np.searchsorted(self.pair_g, [lo, hi])
        return torch.from_numpy(np.bincount(self.pair_s[a:b], minlength=len(self.sources)) > 0)

    def chunk(self, lo: int, hi: int) -> torch.Tensor:
        """P [hi - lo, S, k, k] float32 for groups lo..hi-1."""
        s = torch.from_numpy(self.scores[lo:hi])
        diff = s.unsqueeze(3) - s.unsqueeze(2)  # NaN where either score is missing
        p = (diff > 0).float().add_(0.5 * (diff == 0).float())
        p = torch.where(torch.isnan(diff), torch.nan, p)
        a, b = np.searchsorted(self.pair_g, [lo, hi])
        if b > a:
            n_src, k = p.shape[1], p.shape[2]
            g = self.pair_g[a:b] - lo
            base = (g * n_src + self.pair_s[a:b]) * k
            v = torch.from_numpy(self.pair_v[a:b])
            flat = p.view(-1)  # one flat index per entry: cheaper than four index tensors
            flat[torch.from_numpy((base + self.pair_i[a:b]) * k + self.pair_j[a:b])] = v
            flat[torch.from_numpy((base + self.pair_j[a:b]) * k + self.pair_i[a:b])] = 1 - v
        p.diagonal(dim1=2, dim2=3).fill_(torch.nan)
        return p


def build_preferences(judgments: list[pa.Table], candidates: pa.Table, sources: list[str],
                      reconciled: list[str], k: int) -> PreferenceData:
    """``judgments``: tables with ``JUDGMENT_COLUMNS`` (rows of groups not in ``candidates``
    are ignored); ``candidates``: ``CANDIDATE_COLUMNS`` of whole groups. ``sources`` (sorted)
    and ``reconciled`` are the round's, so that every batch has the same source axis."""
    cands = candidates.select(CANDIDATE_COLUMNS)
    order = pc.sort_indices(cands, [("group_id", "ascending"), ("candidate_idx", "ascending")])
    cands = cands.take(order)
    gid = cands.column("group_id").combine_chunks()
    first = _run_starts(gid)
    group_ids = gid.take(pa.array(first))
    n_cand = np.diff(np.append(first, len(gid))).astype(np.int64)
    rounds = cands.column("round").to_numpy()[first]
    n_groups, n_src = len(first), len(sources)

    is_reconciled = np.isin(np.arange(n_src), [sources.index(x) for x in reconciled])
    point_key, point_v, pair_key, pair_v = [], [], [], []
    for rows in _rows(judgments, group_ids, sources):
        g, s, kind, i, j = rows["g"], rows["s"], rows["kind"], rows["i"], rows["j"]
        n_g = n_cand[np.maximum(g, 0)]
        # Rows naming a group or a candidate index the round does not have are ignored.
        keep = (g >= 0) & (s >= 0) & (i >= 0) & (i < n_g) & (j < n_g) & ~np.isnan(rows["v"])
        src_rec = is_reconciled[np.maximum(s, 0)]
        point = keep & ((kind == KINDS["score"]) | (kind == KINDS["rank"])) & ~src_rec
        pair = keep & (kind == KINDS["pairwise"]) & (src_rec == (rows["view"] == -1)) & (j >= 0)
        if point.any():
            point_key.append((g[point] * n_src + s[point]) * k + i[point])
            point_v.append(np.where(kind[point] == KINDS["rank"], -rows["v"][point],
                                    rows["v"][point]))
        if pair.any():
            pair_key.append(((g[pair] * n_src + s[pair]) * k + i[pair]) * k + j[pair])
            pair_v.append(rows["v"][pair])

    size = n_groups * n_src * k
    key = np.concatenate(point_key) if point_key else np.zeros(0, np.int64)
    total = np.bincount(key, weights=np.concatenate(point_v) if point_v else None,
                        minlength=size)
    count = np.bincount(key, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (total / count).astype(np.float32).reshape(n_groups, n_src, k)

    key = np.concatenate(pair_key) if pair_key else np.zeros(0, np.int64)
    value = np.concatenate(pair_v) if pair_v else np.zeros(0)
    if np.all(key[1:] > key[:-1]):  # the usual case: one row per pair, in order
        uniq, mean = key, value
    else:  # several views of a pair (humans), or rows out of order
        uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
        mean = np.bincount(inverse, weights=value, minlength=len(uniq)) / count
    pair_j, rest = uniq % k, uniq // k
    pair_i, rest = rest % k, rest // k
    pair_s, pair_g = rest % n_src, rest // n_src
    return PreferenceData(
        group_ids=group_ids, rounds=rounds, n_candidates=n_cand,
        offsets=np.concatenate([[0], np.cumsum(n_cand)]),
        candidate_ids=cands.column("candidate_id").combine_chunks(), sources=list(sources),
        scores=scores, pair_g=pair_g, pair_s=pair_s, pair_i=pair_i, pair_j=pair_j,
        pair_v=mean.astype(np.float32))


def _rows(tables: list[pa.Table], group_ids: pa.Array,
          sources: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Each table's scored rows as integer codes (int64 where they index): g (-1 = not a
    group of this batch), s, kind (-1 = not read), i, j (-1 = no opponent or unreadable),
    view, v."""
    source_code = pa.array(sources, pa.string())
    kinds = pa.array(list(KINDS), pa.string())
    scored = pa.array(["scored"], pa.string())
    for table in tables:
        is_scored = _codes(table.column("status"), scored) == 0
        if not is_scored.all():  # copying the table only when some rows failed
            table = table.filter(pa.array(is_scored))
        if not table.num_rows:
            continue
        yield {"g": _codes(table.column("group_id"), group_ids),
               "s": _codes(table.column("source"), source_code),
               "kind": _codes(table.column("kind"), kinds),
               "i": candidate_index(table.column("candidate_id")),
               "j": candidate_index(table.column("opponent_id")),
               "view": table.column("view").to_numpy(zero_copy_only=False),
               "v": pc.fill_null(table.column("value").cast(pa.float64()), np.nan).to_numpy(
                   zero_copy_only=False)}


def _codes(column: pa.ChunkedArray, values: pa.Array) -> np.ndarray:
    """Position of each entry in ``values`` (-1 where absent or null), by a hash lookup; a
    dictionary-encoded column looks up its dictionary only."""
    out = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            lookup = _codes(pa.chunked_array([chunk.dictionary]), values)
            idx = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)
            out.append(np.where(idx >= 0, lookup[np.maximum(idx, 0)], -1))
            continue
        if chunk.type != values.type:
            chunk = chunk.cast(values.type)
        found = pc.fill_null(pc.index_in(chunk, value_set=values), -1)
        out.append(found.to_numpy(zero_copy_only=False).astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _run_starts(sorted_ids: pa.Array) -> np.ndarray:
    """Positions where a new value starts in a sorted array."""
    n = len(sorted_ids)
    if n == 0:
        return np.zeros(0, np.int64)
    changed = pc.not_equal(sorted_ids.slice(1), sorted_ids.slice(0, n - 1))
    return np.concatenate([[0], np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1])


def candidate_index(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The candidate index that ends each id ``{group_id}:{candidate_idx}`` (up to 3 digits,
    k <= 64), -1 where an id is null or does not end that way.

    Read from the Arrow string buffers directly: at tens of millions of ids a string split
    costs seconds. Naive twin: ``candidate_index_naive``."""
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    out = [_trailing_digits(c) for c in chunks]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _trailing_digits(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    if n == 0 or arr.null_count == n:
        return np.full(n, -1, np.int64)
    if pa.types.is_large_string(arr.type):
        offset_type = np.int64
    elif pa.types.is_string(arr.type):
        offset_type = np.int32
    else:
        arr = arr.cast(pa.string())
        offset_type = np.int32
    _, offsets_buf, data_buf = arr.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, offset_type)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size else \
        np.zeros(1, np.uint8)
    end = offsets[1:].astype(np.int64)
    length = end - offsets[:-1]

    def byte(back: int) -> np.ndarray:  # the byte ``back`` places from the end; 0 if shorter
        return np.where(length >= back, data[np.maximum(end - back, 0)], 0).astype(np.int16)

    c1, c2, c3, c4 = byte(1), byte(2), byte(3), byte(4)
    d1, d2, d3 = c1 - 48, c2 - 48, c3 - 48  # digit values where 0 <= d <= 9
    is1, is2, is3 = (d1 >= 0) & (d1 <= 9), (d2 >= 0) & (d2 <= 9), (d3 >= 0) & (d3 <= 9)
    colon = ord(":")
    out = np.full(n, -1, np.int64)
    one = is1 & (c2 == colon)
    two = is1 & is2 & (c3 == colon)
    three = is1 & is2 & is3 & (c4 == colon)
    out[one] = d1[one]
    out[two] = d2[two] * 10 + d1[two]
    out[three] = d3[three] * 100 + d2[three] * 10 + d1[three]
    if arr.null_count:
        out[~arr.is_valid().to_numpy(zero_copy_only=False)] = -1
    return out


def candidate_index_naive(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The same, one id at a time."""
    out = []
    for x in ids.to_pylist():
        head, sep, tail = (x or "").rpartition(":")
        out.append(int(tail) if sep and tail.isdigit() and len(tail) <= 3 and tail.isascii()
                   else -1)
    return np.array(out, np.int64)
