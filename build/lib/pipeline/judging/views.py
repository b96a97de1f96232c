"""Presentation orders of a group for a judge, and mapping answers back.

A *view* is a permutation ``perm`` where ``perm[p]`` is the canonical candidate index shown
at position ``p``. View 0 is a seeded shuffle and view 1 its reverse, so every candidate is
seen near the front once and near the back once (position bias shows up as disagreement
between them); further views are independent shuffles. Orders are a pure function of
(group id, k, seed), so a resumed run shows the same orders.
"""

from __future__ import annotations

import hashlib
import random


def views_for(group_id: str, k: int, n_views: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(hashlib.blake2b(f"{seed}:{group_id}".encode(), digest_size=8).digest())
    first = list(range(k))
    rng.shuffle(first)
    views = [first, first[::-1]]
    while len(views) < n_views:
        nxt = list(range(k))
        rng.shuffle(nxt)
        views.append(nxt)
    return views[:n_views]


def to_shown(perm: list[int], canonical: list) -> list:
    """Values in canonical candidate order -> the order shown."""
    return [canonical[c] for c in perm]


def to_canonical(perm: list[int], shown: list) -> list:
    """Values in the order shown (e.g. a judge's scores) -> canonical candidate order."""
    out = [None] * len(perm)
    for position, c in enumerate(perm):
        out[c] = shown[position]
    return out


def position_of(perm: list[int]) -> list[int]:
    """position_of(perm)[c] = where canonical candidate c was shown."""
    return to_canonical(perm, list(range(len(perm))))
