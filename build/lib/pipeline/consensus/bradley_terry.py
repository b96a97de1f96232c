"""Bradley-Terry maximum likelihood for many groups at once, by Newton's method.

For one group, with ``wins[i, j]`` the (weighted) number of times i beat j, maximise
    sum_ij wins[i, j] * log sigmoid(theta_i - theta_j)  -  (l2 / 2) * |theta|^2.
A tie counts as half a win each way. The small L2 term makes the optimum unique and finite
even when one candidate wins every comparison (perfect separation) and centres theta; the
objective is strictly concave, so Newton converges in a few steps. Candidates without any
comparison (``valid`` False) keep theta = 0 and are excluded by the caller.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def fit_bradley_terry(wins: Tensor, valid: Tensor, l2: float = 0.1, iters: int = 25,
                      tol: float = 1e-9) -> Tensor:
    """wins [G, k, k] >= 0, valid [G, k] bool -> theta [G, k] (float64)."""
    wins = wins.to(torch.float64) * (valid.unsqueeze(2) & valid.unsqueeze(1))
    g, k, _ = wins.shape
    n = wins + wins.transpose(1, 2)
    theta = torch.zeros(g, k, dtype=torch.float64, device=wins.device)
    eye = torch.eye(k, dtype=torch.float64, device=wins.device)
    for _ in range(iters):
        p = torch.sigmoid(theta.unsqueeze(2) - theta.unsqueeze(1))  # p[i, j] = P(i beats j)
        grad = (wins * (1 - p) - wins.transpose(1, 2) * p).sum(2) - l2 * theta
        curv = n * p * (1 - p)
        hess = curv - torch.diag_embed(curv.sum(2)) - l2 * eye  # negative definite
        step = torch.linalg.solve(hess, grad.unsqueeze(2)).squeeze(2)
        theta = theta - step
        if step.abs().max() < tol:
            break
    return theta * valid
