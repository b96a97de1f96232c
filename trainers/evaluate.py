"""Evaluating a round's policy on held-out prompts, and the over-optimisation watch.

Per round (Gao et al. 2022: report the gold score next to the proxy the policy is trained
on, as the policy moves away from where it started):
- ``gold_score``: mean gold-verifier score of samples (never a training signal in the demo);
- ``exact``: share of samples the verifier scores 1.0;
- ``train_reward``: mean score the training reward models give the same samples;
- ``kl_to_base``: mean of log pi(y|x) - log pi_base(y|x) over samples y ~ pi, a Monte-Carlo
  estimate of KL(pi || pi_base);
- ``length``: mean completion tokens;
- ``hack_rate``: share of prompts where the training reward's favourite sample is one the
  gold verifier ranks below the best sample of the same prompt;
- ``win_rate_vs_base``: P(gold of this round's sample > round 0's sample on the same prompt
  and index), ties counting half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.atomic import write_parquet_atomic
from pipeline.config import Config
from pipeline.generation import round_prompts
from pipeline.judging.reward_model import RewardModelScorer
from pipeline.schema import CANDIDATES, EVALS
from pipeline.store import round_dir
from pipeline.tasks import get_task
from trainers.data import RankedGroup, tokenize_groups
from trainers.reference import group_logps_by_candidate

METRICS = ("gold_score", "exact", "train_reward", "kl_to_base", "length", "hack_rate",
           "win_rate_vs_base", "overoptimised")


def eval_samples_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "eval" / "samples.parquet"


def evals_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "evals.parquet"


def sample_heldout(sampler, cfg: Config, workdir: Path, round_: int) -> pa.Table:
    """The policy's samples on the held-out prompts (kept beside, not in, the candidates)."""
    path = eval_samples_path(workdir, round_)
    if path.exists():
        return pq.read_table(path)
    _, heldout = round_prompts(cfg, 0)
    table = sampler.sample(heldout, round_, "eval", k=cfg.loop.eval_k)
    write_parquet_atomic(table, path, CANDIDATES)
    return table


def _logps(model_dir: Path, groups: list[RankedGroup], rows: list[dict]) -> np.ndarray:
    """Summed log-probs of each sample as generated, in ``rows`` order; tokenised as
    training does (EOS included where the sample stopped: stopping is part of it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    by_id = group_logps_by_candidate(model, tokenize_groups(groups, tok), pad, 32, 1 << 20)
    return np.array([by_id[r["candidate_id"]] for r in rows])


def _as_groups(rows: list[dict], prompts: dict[str, str], k: int) -> list[RankedGroup]:
    return [RankedGroup(g[0]["group_id"], prompts[g[0]["prompt_id"]],
                        [r["candidate_id"] for r in g], [r["text"] for r in g],
                        [list(r["token_ids"]) for r in g],
                        [r["finish_reason"] == "stop" for r in g], [0] * k, 1.0)
            for g in (rows[i:i + k] for i in range(0, len(rows), k))]


def evaluate_round(cfg: Config, workdir: Path, round_: int, samples: pa.Table,
                   policy_dir: Path, base_dir: Path, reward_models: list[tuple[str, Path]],
                   previous: dict[str, float] | None = None) -> dict[str, float]:
    task = get_task(cfg.task.name)
    k = cfg.loop.eval_k
    _, heldout = round_prompts(cfg, 0)
    ref = {p.prompt_id: p for p in heldout}
    rows = sorted(samples.to_pylist(), key=lambda r: (r["prompt_id"], r["candidate_idx"]))
    gold = np.array([task.gold_score(ref[r["prompt_id"]].reference, r["text"]) for r in rows])
    texts = [r["text"] for r in rows]
    rm_scores = np.mean([RewardModelScorer(path, name).score(
        [ref[r["prompt_id"]].prompt for r in rows], texts) for name, path in reward_models],
        axis=0) if reward_models else np.full(len(rows), np.nan)
    kl = 0.0
    if Path(policy_dir).resolve() != Path(base_dir).resolve():
        groups = _as_groups(rows, {p.prompt_id: p.prompt for p in heldout}, k)
        kl = float(np.mean(_logps(policy_dir, groups, rows) - _logps(base_dir, groups, rows)))
    g = gold.reshape(-1, k)
    r = rm_scores.reshape(-1, k)
    favourite = np.nanargmax(np.nan_to_num(r, nan=-np.inf), axis=1) if reward_models else None
    hack = float(np.mean(g[np.arange(len(g)), favourite] < g.max(1))) if reward_models \
        else float("nan")
    metrics = {"gold_score": float(gold.mean()), "exact": float((gold == 1.0).mean()),
               "train_reward": float(np.nanmean(rm_scores)) if reward_models else float("nan"),
               "kl_to_base": kl, "length": float(np.mean([r["n_tokens"] for r in rows])),
               "hack_rate": hack, "win_rate_vs_base": _win_rate(workdir, round_, rows, gold,
                                                              task, ref)}
    metrics["overoptimised"] = float(overoptimised(previous, metrics,
                                                   cfg.loop.overopt_tolerance))
    table = pa.table({"round": pa.array([round_] * len(metrics), pa.int32()),
                      "metric": list(metrics), "value": list(metrics.values())})
    write_parquet_atomic(table, evals_path(workdir, round_), EVALS)
    return metrics


def _win_rate(workdir, round_, rows, gold, task, ref) -> float:
    base_path = eval_samples_path(workdir, 0)
    if round_ == 0 or not base_path.exists():
        return 0.5
    base = {(r["prompt_id"], r["candidate_idx"]): task.gold_score(ref[r["prompt_id"]].reference,
                                                                  r["text"])
            for r in pq.read_table(base_path).to_pylist()}
    wins = [1.0 if s > base[key] else 0.5 if s == base[key] else 0.0
            for s, key in zip(gold, ((r["prompt_id"], r["candidate_idx"]) for r in rows),
                              strict=True) if key in base]
    return float(np.mean(wins)) if wins else float("nan")


def overoptimised(previous: dict[str, float] | None, current: dict[str, float],
                  tolerance: float = 0.0) -> bool:
    """The training reward rose while the gold score fell (by more than ``tolerance``)."""
    if not previous:
        return False
    reward_up = current["train_reward"] > previous["train_reward"]
    gold_down = current["gold_score"] < previous["gold_score"] - tolerance
    return bool(reward_up and gold_down)


def read_evals(workdir: Path) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for path in sorted(Path(workdir).glob("rounds/*/evals.parquet")):
        for row in pq.read_table(path).to_pylist():
            out.setdefault(row["round"], {})[row["metric"]] = row["value"]
    return out
