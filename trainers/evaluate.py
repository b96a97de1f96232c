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
from trainers.data import TokenizedGroup, collate
from trainers.logprobs import group_logps

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


@torch.no_grad()
def _logps(model_dir: Path, prompts: list[str], rows: list[dict], k: int) -> np.ndarray:
    """Summed log-probs of each sample as generated, EOS included where it stopped (the
    stop is part of what the policy sampled)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = tok.eos_token_id
    seqs = [list(r["token_ids"]) + ([eos] if r["finish_reason"] == "stop" else []) or [eos]
            for r in rows]
    out = []
    for start in range(0, len(prompts), 32):
        groups = [TokenizedGroup(tok(p)["input_ids"], seqs[(start + n) * k:(start + n + 1) * k],
                                 [0] * k, 1.0, [""] * k)
                  for n, p in enumerate(prompts[start:start + 32])]
        batch, _, _ = collate(groups, tok.pad_token_id if tok.pad_token_id is not None
                              else tok.eos_token_id)
        out.append(group_logps(model, batch).numpy())
    return np.concatenate(out).reshape(-1)


def evaluate_round(cfg: Config, workdir: Path, round_: int, samples: pa.Table,
                   policy_dir: Path, base_dir: Path, reward_models: list[tuple[str, Path]],
                   previous: dict[str, float] | None = None) -> dict[str, float]:
    task = get_task(cfg.task.name)
    k = cfg.loop.eval_k
    _, heldout = round_prompts(cfg, 0)
    ref = {p.prompt_id: p for p in heldout}
    rows = sorted(samples.to_pylist(), key=lambda r: (r["prompt_id"], r["candidate_idx"]))
    prompt_ids = [r["prompt_id"] for r in rows[::k]]
    gold = np.array([task.gold_score(ref[r["prompt_id"]].reference, r["text"]) for r in rows])
    prompts = [ref[p].prompt for p in prompt_ids]
    texts = [r["text"] for r in rows]
    rm_scores = np.mean([RewardModelScorer(path, name).score(
        [ref[r["prompt_id"]].prompt for r in rows], texts) for name, path in reward_models],
        axis=0) if reward_models else np.full(len(rows), np.nan)
    kl = 0.0
    if Path(policy_dir).resolve() != Path(base_dir).resolve():
        kl = float(np.mean(_logps(policy_dir, prompts, rows, k)
                           - _logps(base_dir, prompts, rows, k)))
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
