"""Preference graphs of many groups at once: adjacency ``adj[g, i, j] = True`` means
"i is preferred to j" in group g. Shapes [G, k, k]; k is small (<= 64), G is large."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def closure(adj: Tensor) -> Tensor:
    """Transitive closure (Warshall): reach[g, i, j] = a path i -> ... -> j exists."""
    reach = adj.clone()
    for m in range(adj.shape[-1]):
        reach |= reach[:, :, m:m + 1] & reach[:, m:m + 1, :]
    return reach


def on_cycle(reach: Tensor) -> Tensor:
    """[G, k]: the candidate lies on some directed cycle (it can reach itself)."""
    return torch.diagonal(reach, dim1=1, dim2=2)


def scc_labels(reach: Tensor) -> Tensor:
    """[G, k]: strongly connected component of each candidate, labelled by its lowest
    member index. Candidates on one cycle share a label."""
    k = reach.shape[-1]
    eye = torch.eye(k, dtype=torch.bool, device=reach.device)
    mutual = (reach & reach.transpose(1, 2)) | eye
    return mutual.to(torch.uint8).argmax(dim=2)  # first True in each row


def count_3cycles(adj: Tensor) -> Tensor:
    """[G]: directed triangles i -> j -> l -> i, each counted once."""
    a = adj.to(torch.float32)
    return (torch.einsum("gij,gjl,gli->g", a, a, a) / 3).round().to(torch.int64)
