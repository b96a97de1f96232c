"""Ranked groups for training: read from the store, tokenised, batched by token budget.

A training example is one whole group: its prompt, its K completions and their ranks
(0 = best, ties equal, -1 = excluded), plus the group's weight from the ranking stage
(groups with weight 0 are left out). Groups of different K share a batch by padding K with
excluded, empty candidates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import torch

from pipeline.store import TABLE_GLOBS, table_files
from trainers.logprobs import GroupBatch


@dataclass
class RankedGroup:
    group_id: str
    prompt_ids: list[int]  # the prompt exactly as the policy saw it (chat template applied)
    candidate_ids: list[str]
    texts: list[str]
    token_ids: list[list[int]]  # as sampled; re-tokenising text can differ (split UTF-8)
    stop_ids: list[int | None]  # the stop token that ended each sample; None = truncated
    ranks: list[int]
    weight: float


def load_ranked_groups(workdir: Path, rounds: list[int]) -> list[RankedGroup]:
    """Groups of the given rounds that have a ranking and a non-zero weight, by group id."""
    workdir = Path(workdir).resolve()
    for table, stage in (("candidates", "generate"), ("rankings", "rank"), ("groups", "rank")):
        if not table_files(workdir, table):
            raise ValueError(f"{workdir} has no {table} yet; run `grpo {stage}` first")
        have = {int(p.parent.parent.name[1:]) for p in table_files(workdir, table)}
        missing = sorted(set(rounds) - have)
        if missing:
            raise ValueError(f"round(s) {missing} of {workdir} have no {table} yet; run "
                             f"`grpo {stage} --round {missing[0]}` first")
    glob = {name: str(workdir / pattern) for name, pattern in TABLE_GLOBS.items()}
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT c.group_id, any_value(p.prompt_token_ids) AS prompt_ids, g.weight,
               list(c.candidate_id ORDER BY c.candidate_idx) AS candidate_ids,
               list(c.text ORDER BY c.candidate_idx) AS texts,
               list(c.token_ids ORDER BY c.candidate_idx) AS token_ids,
               list(c.stop_token_id ORDER BY c.candidate_idx) AS stop_ids,
               list(r.rank ORDER BY c.candidate_idx) AS ranks
        FROM read_parquet('{glob["candidates"]}') c
        JOIN read_parquet('{glob["rankings"]}') r USING (candidate_id)
        JOIN read_parquet('{glob["prompts"]}') p ON p.round = c.round AND p.prompt_id = c.prompt_id
        JOIN read_parquet('{glob["groups"]}') g ON g.group_id = c.group_id
        WHERE c.round IN (SELECT unnest(?)) AND g.weight > 0
        GROUP BY c.group_id, g.weight
        ORDER BY c.group_id
    """, [rounds]).fetchall()
    con.close()
    return [RankedGroup(r[0], r[1], r[3], r[4], r[5], r[6], r[7], float(r[2])) for r in rows]


def groups_fingerprint(groups: list[RankedGroup]) -> str:
    """Hash of the training data's tokens: keys the reference cache."""
    h = hashlib.sha256()
    for g in groups:
        h.update(json.dumps([g.prompt_ids, g.candidate_ids, g.token_ids, g.stop_ids]).encode())
    return h.hexdigest()[:16]


@dataclass
class TokenizedGroup:
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    ranks: list[int]
    weight: float
    candidate_ids: list[str]

    @property
    def n_tokens(self) -> int:
        return len(self.prompt_ids) + sum(map(len, self.completion_ids))


def tokenize_groups(groups: list[RankedGroup], fallback_eos: int) -> list[TokenizedGroup]:
    """The stored token stream, nothing re-tokenised: the prompt ids as rendered for the
    policy, each completion's sampled ids plus the stop token that ended it (a sample that
    stopped on its own is trained to stop; a truncated one is not)."""
    out = []
    for g in groups:
        comps = [list(ids) + ([stop] if stop is not None else [])
                 for ids, stop in zip(g.token_ids, g.stop_ids, strict=True)]
        # An empty completion (a stop string at once) still needs one target to score.
        comps = [c or [fallback_eos] for c in comps]
        out.append(TokenizedGroup(list(g.prompt_ids), comps, list(g.ranks), g.weight,
                                  list(g.candidate_ids)))
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The groups' order in an epoch: a pure function of (seed, epoch), so a resumed run and
    every process of a multi-process run see the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def plan_steps(order: list[int], groups_per_step: int) -> list[list[int]]:
    """Optimizer steps of an epoch: consecutive runs of ``groups_per_step`` groups (over all
    processes; the last step of an epoch may hold fewer)."""
    return [order[i: i + groups_per_step] for i in range(0, len(order), groups_per_step)]


def rank_share(step: list[int], rank: int, world_size: int) -> list[int]:
    """The groups of a step that process ``rank`` trains on: disjoint across ranks, their
    union is the step, and the same on every run."""
    return step[rank::world_size]


def subset(group: TokenizedGroup, candidates: list[int]) -> TokenizedGroup:
    """The same prompt with only the given candidates (a piece of a split group)."""
    return TokenizedGroup(group.prompt_ids, [group.completion_ids[j] for j in candidates],
                          [group.ranks[j] for j in candidates], group.weight,
                          [group.candidate_ids[j] for j in candidates])


@dataclass
class MicroBatches:
    """One process's share of a step, cut to the token budget: ``whole`` lists of groups
    that fit together, and ``split``: a group too large for the budget alone, as lists of
    its candidate indices (each list, with the prompt, fits)."""

    whole: list[list[int]]
    split: dict[int, list[list[int]]]

    @property
    def passes(self) -> int:
        return len(self.whole) + sum(map(len, self.split.values()))


def plan_micro_batches(groups: list[TokenizedGroup], share: list[int],
                       max_tokens: int) -> MicroBatches:
    """Cut a share of groups into forward/backward passes of at most ``max_tokens`` padded
    token positions (prompt counted once). A group that is larger than that alone is split
    by candidates; its loss is computed over all of them (see trainers/step.py)."""
    fits = [i for i in share if _padded_tokens(groups, [i]) <= max_tokens]
    split = {}
    for i in share:
        if i in fits:
            continue
        g = groups[i]
        c = max(map(len, g.completion_ids))
        per_piece = max(1, (max_tokens - len(g.prompt_ids)) // c)
        k = len(g.completion_ids)
        split[i] = [list(range(j, min(k, j + per_piece))) for j in range(0, k, per_piece)]
    return MicroBatches(plan_batches(groups, fits, len(fits) or 1, max_tokens), split)


def plan_batches(groups: list[TokenizedGroup], order: list[int], groups_per_batch: int,
                 max_tokens: int) -> list[list[int]]:
    """Consecutive groups of ``order`` into batches capped by count and padded tokens (a
    group above the token cap alone is a batch of its own)."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        trial = current + [i]
        too_big = len(trial) > groups_per_batch or _padded_tokens(groups, trial) > max_tokens
        if current and too_big:
            batches.append(current)
            trial = [i]
        current = trial
    if current:
        batches.append(current)
    return batches


def _padded_tokens(groups: list[TokenizedGroup], idx: list[int]) -> int:
    p = max(len(groups[i].prompt_ids) for i in idx)
    k = max(len(groups[i].completion_ids) for i in idx)
    c = max(len(x) for i in idx for x in groups[i].completion_ids)
    return len(idx) * (p + k * c)


def collate(groups: list[TokenizedGroup], pad_id: int) -> tuple[GroupBatch, torch.Tensor,
                                                                 torch.Tensor]:
    """(GroupBatch, ranks [B, K], weights [B]); missing candidates are rank -1."""
    b = len(groups)
    p = max(len(g.prompt_ids) for g in groups)
    k = max(len(g.completion_ids) for g in groups)
    c = max(len(x) for g in groups for x in g.completion_ids)
    prompt_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    comp_ids = torch.full((b, k, c), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((b, k, c), dtype=torch.long)
    ranks = torch.full((b, k), -1, dtype=torch.long)
    for i, g in enumerate(groups):
        n = len(g.prompt_ids)
        prompt_ids[i, p - n:] = torch.tensor(g.prompt_ids)
        prompt_mask[i, p - n:] = 1
        for j, comp in enumerate(g.completion_ids):
            comp_ids[i, j, : len(comp)] = torch.tensor(comp)
            comp_mask[i, j, : len(comp)] = 1
        ranks[i, : len(g.ranks)] = torch.tensor(g.ranks)
    weights = torch.tensor([g.weight for g in groups], dtype=torch.float32)
    return GroupBatch(prompt_ids, prompt_mask, comp_ids, comp_mask), ranks, weights


def to_hf_dataset(groups: list[RankedGroup]):
    """The same data as a Hugging Face ``datasets.Dataset`` (one row per group)."""
    from datasets import Dataset

    return Dataset.from_list([asdict(g) for g in groups])


def from_hf_dataset(dataset) -> list[RankedGroup]:
    return [RankedGroup(**row) for row in dataset]


def why_no_training_groups(workdir: Path, rounds: list[int]) -> str:
    """Say why rounds that were ranked hold no group with weight > 0."""
    workdir = Path(workdir).resolve()
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT status, count(*), sum((weight > 0)::INT) FROM
        read_parquet('{workdir / TABLE_GLOBS["groups"]}')
        WHERE round IN (SELECT unnest(?)) GROUP BY status ORDER BY status
    """, [rounds]).fetchall()
    con.close()
    counts = {status: n for status, n, _ in rows}
    total = sum(counts.values())
    head = f"no ranked group with weight > 0 in round(s) {rounds} of {workdir}"
    if not total:
        return f"{head}: they have no groups yet; run `grpo judge` and `grpo rank` first"
    if counts.get("unranked") == total:
        return (f"{head}: all {total} groups are unranked because no source with weight > 0 "
                "judged them (the gold source is always 0): give a judged source a weight in "
                "rank.weights, or add a source to judging.sources, then `grpo rank` again")
    return (f"{head}: every group's status ({counts}) has weight 0 under rank.intransitive / "
            "rank.contested = drop; use downweight or keep, then `grpo rank` again")
