"""Evaluating a round's policy on held-out prompts, and the over-optimisation watch.

Per round (Gao et al. 2022: report the gold score next to the proxy the policy is trained
on, as the policy moves away from where it started), on ``loop.eval_k`` samples per
held-out prompt:
- ``gold_score``: mean score of the gold source (``loop.gold``: a verifier, a reward model
  or an LLM judge that never shapes the consensus); NaN with no gold configured;
- ``exact``: share of samples a gold verifier scores 1.0 (NaN for other gold sources);
- ``train_reward``: mean score the training-reward sources (``loop.training_reward``, gold
  excluded) give the same samples;
- ``kl_to_base``: mean of log pi(y|x) - log pi_base(y|x) over samples y ~ pi, a Monte-Carlo
  estimate of KL(pi || pi_base), on the stored token ids;
- ``length``: mean completion tokens;
- ``hack_rate``: share of prompts where the training reward's favourite sample is one the
  gold source ranks below the best sample of the same prompt;
- ``win_rate_vs_base``: P(gold of this round's sample > round 0's sample on the same prompt
  and index), ties counting half.
Per-sample scores are kept in ``rounds/rNNN/eval/scores.parquet``.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.config import Config
from pipeline.judging.groups import groups_from_rows
from pipeline.judging.naming import ensemble_members
from pipeline.judging.score_samples import sample_scorer
from pipeline.judging.sources import configured_sources
from pipeline.schema import CANDIDATES, EVAL_SCORES, EVALS
from pipeline.store import round_dir
from trainers.data import RankedGroup, tokenize_groups
from trainers.reference import group_logps_by_candidate, load_for_inference

METRICS = ("gold_score", "exact", "train_reward", "kl_to_base", "length", "hack_rate",
           "win_rate_vs_base", "overoptimised")


def eval_samples_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "eval" / "samples.parquet"


def eval_scores_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "eval" / "scores.parquet"


def evals_path(workdir: Path, round_: int) -> Path:
    return round_dir(workdir, round_) / "evals.parquet"


def sample_heldout(sampler, plan, workdir: Path, eval_k: int) -> pa.Table:
    """The policy's samples on the held-out prompts (kept beside, not in, the candidates)."""
    path = eval_samples_path(workdir, plan.round)
    if path.exists():
        return read_parquet_checked(path, CANDIDATES)
    table = sampler.sample(plan.heldout, plan.round, "eval", plan.stop_ids, k=eval_k)
    write_parquet_atomic(table, path, CANDIDATES)
    return table


def _logps(model_dir: Path, groups: list[RankedGroup], rows: list[dict]) -> np.ndarray:
    """Summed log-probs of each sample's stored tokens (stop token included where it
    stopped: stopping is part of the sample), in ``rows`` order."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = load_for_inference(model_dir)
    by_id = group_logps_by_candidate(model, tokenize_groups(groups, tok.eos_token_id), pad, 32,
                                     1 << 20)
    return np.array([by_id[r["candidate_id"]] for r in rows])


def _as_ranked(groups, prompts: dict[str, dict], rows_by_id: dict[str, dict]) -> list:
    return [RankedGroup(g.group_id, list(prompts[g.prompt_id]["prompt_token_ids"]),
                        g.candidate_ids, g.texts,
                        [list(rows_by_id[c]["token_ids"]) for c in g.candidate_ids],
                        [rows_by_id[c]["stop_token_id"] for c in g.candidate_ids],
                        [0] * g.k, 1.0) for g in groups]


def evaluate_round(cfg: Config, workdir: Path, round_: int, samples: pa.Table,
                   heldout: list[dict], policy_dir: Path, base_dir: Path,
                   previous: dict[str, float] | None = None,
                   endpoint=None) -> dict[str, float]:
    rows = samples.to_pylist()
    prompts = {p["prompt_id"]: p for p in heldout}
    groups = groups_from_rows(rows, prompts)
    rows_by_id = {r["candidate_id"]: r for r in rows}
    ordered = [rows_by_id[c] for g in groups for c in g.candidate_ids]
    k = cfg.loop.eval_k

    specs = configured_sources(cfg, workdir)
    by_source = {s.source: s for s in specs}
    gold_spec = by_source.get(cfg.loop.gold) if cfg.loop.gold else None
    training = [s for s in specs if fnmatch.fnmatchcase(s.source, cfg.loop.training_reward)
                and s.source != cfg.loop.gold]
    rm_members = [s for s in specs if s.source in ensemble_members(cfg)]
    nan = np.full(len(ordered), np.nan)
    with sample_scorer(cfg, workdir, endpoint) as scorer:
        gold = np.array(scorer.score(gold_spec, groups, rm_members)) if gold_spec else nan
        reward = np.nanmean([scorer.score(s, groups, rm_members) for s in training], axis=0) \
            if training else nan

    kl = 0.0
    if Path(policy_dir).resolve() != Path(base_dir).resolve():
        ranked = _as_ranked(groups, prompts, rows_by_id)
        kl = float(np.mean(_logps(policy_dir, ranked, ordered) -
                           _logps(base_dir, ranked, ordered)))
    _write_scores(workdir, round_, ordered, gold, reward)

    g, r = gold.reshape(-1, k), reward.reshape(-1, k)
    hack = math.nan
    if training and gold_spec:
        usable = ~np.isnan(r).all(1) & ~np.isnan(g).all(1)
        fav = np.nanargmax(np.where(np.isnan(r), -np.inf, r), axis=1)
        picked = g[np.arange(len(g)), fav]
        hack = float(np.mean((picked < np.nanmax(g, axis=1))[usable])) if usable.any() \
            else math.nan
    verifier_gold = gold_spec is not None and gold_spec.kind == "verifier"
    metrics = {"gold_score": _nanmean(gold),
               "exact": _nanmean(np.where(np.isnan(gold), np.nan, gold == 1.0))
               if verifier_gold else math.nan,
               "train_reward": _nanmean(reward), "kl_to_base": kl,
               "length": float(np.mean([r_["n_tokens"] for r_ in ordered])),
               "hack_rate": hack,
               "win_rate_vs_base": _win_rate(workdir, round_, ordered, gold)}
    metrics["overoptimised"] = float(overoptimised(previous, metrics,
                                                   cfg.loop.overopt_tolerance))
    table = pa.table({"round": pa.array([round_] * len(metrics), pa.int32()),
                      "metric": list(metrics), "value": list(metrics.values())})
    write_parquet_atomic(table, evals_path(workdir, round_), EVALS)
    return metrics


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def _write_scores(workdir, round_, rows, gold, reward) -> None:
    table = pa.table({
        "candidate_id": [r["candidate_id"] for r in rows],
        "prompt_id": [r["prompt_id"] for r in rows],
        "candidate_idx": pa.array([r["candidate_idx"] for r in rows], pa.int32()),
        "gold": pa.array(gold, pa.float64(), from_pandas=True),
        "train_reward": pa.array(reward, pa.float64(), from_pandas=True)})
    write_parquet_atomic(table, eval_scores_path(workdir, round_), EVAL_SCORES)


def _win_rate(workdir, round_, rows, gold) -> float:
    base_path = eval_scores_path(workdir, 0)
    if round_ == 0:
        return 0.5
    if not base_path.exists():
        return math.nan
    base = {(r["prompt_id"], r["candidate_idx"]): r["gold"]
            for r in pq.read_table(base_path).to_pylist()}
    wins = []
    for s, r in zip(gold, rows, strict=True):
        b = base.get((r["prompt_id"], r["candidate_idx"]))
        if b is None or math.isnan(s) or b is None or math.isnan(b):
            continue
        wins.append(1.0 if s > b else 0.5 if s == b else 0.0)
    return float(np.mean(wins)) if wins else math.nan


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
