"""Held-out evaluation of many trained policies: fast, on the pipeline's token stream, scored
as the loop scores.

Sampling uses plain transformers ``generate`` instead of vLLM: at 0.46M parameters a padded
batch is faster than vLLM (README, Performance) and skips an engine start per policy, which
over a hundred policies is most of the hour. The token stream is the pipeline's: the round's
chat-templated ``prompt_token_ids``, the model's stop ids (``generation_config``), the same
temperature, top-p (top-k off, as in vLLM) and ``max_new_tokens``; a sample is cut at its
first stop id, which is kept in ``stop_token_id`` as vLLM's samples keep it. Weights run in
float32 here (vLLM samples in bfloat16): every policy is evaluated the same way, so
comparisons are like for like.

Scores come from ``SampleScorer``, the class ``trainers.evaluate`` uses: the gold verifier,
the reward models (and the LLM judge) on the same samples. Per-prompt metrics follow
``trainers.evaluate``'s definitions exactly; ``self_check`` runs ``evaluate_round`` on the same
samples and compares.

Within a seed every policy is sampled with the same torch seed (common random numbers): the
same uniform draws pick the tokens, so similar policies give similar samples and differences
between arms carry less sampling noise, while each policy's samples stay exact samples.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from bench.evidence_plan import GOLD, PROXY
from pipeline.atomic import read_parquet_checked, write_parquet_atomic
from pipeline.config import Config
from pipeline.judging.groups import groups_from_rows
from pipeline.judging.naming import ensemble_members
from pipeline.judging.score_samples import SampleScorer
from pipeline.judging.sources import configured_sources
from pipeline.schema import CANDIDATES
from pipeline.store import candidate_id, group_id


@torch.no_grad()
def sample_hf(policy_dir: Path, heldout: list[dict], stop_ids: list[int], cfg: Config, k: int,
              seed: int, batch_prompts: int = 256) -> pa.Table:
    """k samples per held-out prompt as rows of the candidates table."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    g = cfg.generation
    stops = set(stop_ids)
    torch.manual_seed(seed)
    rows = []
    for lo in range(0, len(heldout), batch_prompts):
        chunk = heldout[lo:lo + batch_prompts]
        ids = [list(p["prompt_token_ids"]) for p in chunk]
        width = max(map(len, ids))
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True,
                             temperature=g.temperature, top_p=g.top_p, top_k=0,
                             max_new_tokens=g.max_new_tokens, num_return_sequences=k,
                             eos_token_id=list(stop_ids), pad_token_id=pad)
        new = out[:, width:].tolist()
        for i, p in enumerate(chunk):
            gid = group_id(0, p["prompt_id"])
            for j in range(k):
                seq = new[i * k + j]
                cut = next((t for t, x in enumerate(seq) if x in stops), None)
                tokens = seq if cut is None else seq[:cut]
                text = tok.decode(tokens, skip_special_tokens=True)
                rows.append({"round": 0, "group_id": gid, "prompt_id": p["prompt_id"],
                             "candidate_idx": j, "candidate_id": candidate_id(gid, j),
                             "text": text, "token_ids": tokens, "policy": str(policy_dir),
                             "n_tokens": len(tokens),
                             "finish_reason": "length" if cut is None else "stop",
                             "stop_token_id": None if cut is None else seq[cut],
                             "logprob": None, "seed": seed, "injection": None,
                             "config_hash": "eval-hf"})
    return pa.Table.from_pylist(rows, schema=CANDIDATES.arrow_schema)


class Evaluator:
    """Samples a policy on the held-out prompts and scores the samples with the named sources;
    holds the scorers (and the LLM judge's endpoint) for the whole run."""

    def __init__(self, cfg: Config, workdir: Path, heldout: list[dict], stop_ids: list[int],
                 k: int, endpoint=None) -> None:
        self.cfg, self.workdir, self.heldout, self.stop_ids, self.k = (cfg, workdir, heldout,
                                                                        stop_ids, k)
        self.prompts = {p["prompt_id"]: p for p in heldout}
        self.specs = {sp.source: sp for sp in configured_sources(cfg, workdir)}
        self.members = [self.specs[m] for m in ensemble_members(cfg)]
        self.scorer = SampleScorer(cfg, workdir, endpoint)

    def close(self) -> None:
        self.scorer.__exit__(None, None, None)

    def samples(self, policy_dir: Path, seed: int, path: Path) -> pa.Table:
        if path.exists():
            return read_parquet_checked(path, CANDIDATES)
        table = sample_hf(policy_dir, self.heldout, self.stop_ids, self.cfg, self.k, seed)
        write_parquet_atomic(table, path, CANDIDATES)
        return table

    def scores(self, table: pa.Table, sources: list[str]) -> dict[str, np.ndarray]:
        """{"prompt_ids": [P], source: [P, k]} in the held-out prompts' group order."""
        groups = groups_from_rows(table.to_pylist(), self.prompts)
        out: dict[str, np.ndarray] = {"prompt_ids": np.array([g.prompt_id for g in groups])}
        for source in sources:
            values = self.scorer.score(self.specs[source], groups, self.members)
            out[source] = np.array(values, dtype=float).reshape(len(groups), self.k)
        return out

    def evaluate(self, policy_dir: Path, seed: int, sources: list[str], path: Path
                 ) -> dict[str, np.ndarray]:
        """Scores of the policy's held-out samples, cached in ``path`` (.npz, samples beside)."""
        if path.exists():
            with np.load(path) as z:
                have = dict(z)
            if all(s in have for s in sources):
                return have
        table = self.samples(policy_dir, seed, path.with_suffix(".samples.parquet"))
        result = self.scores(table, sources)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **result)
        return result


# --- per-prompt metrics, as trainers.evaluate defines them ---------------------------------

def hack(gold: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Per prompt: 1 where the signal's favourite sample is one the gold ranks below the
    prompt's best sample; NaN where either has no score."""
    usable = ~np.isnan(signal).all(1) & ~np.isnan(gold).all(1)
    fav = np.nanargmax(np.where(np.isnan(signal), -np.inf, signal), axis=1)
    picked = gold[np.arange(len(gold)), fav]
    with np.errstate(invalid="ignore"):
        best = np.nanmax(np.where(usable[:, None], gold, 0.0), axis=1)
    return np.where(usable, (picked < best).astype(float), np.nan)


def within_prompt_z(x: np.ndarray) -> np.ndarray:
    """Per-prompt z-scores (population sd; a constant prompt gets sd 1), as ``combine_scores``
    standardises reward models before an ensemble combines them."""
    mu = np.nanmean(x, axis=1, keepdims=True)
    sd = np.nanstd(x, axis=1, keepdims=True)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def signal_scores(scores: dict[str, np.ndarray], signal: tuple[tuple[str, float], ...]
                  ) -> np.ndarray | None:
    """An arm's training signal on held-out samples: one source's scores, or the weighted mean
    of several sources' within-prompt z-scores (the ensemble's mean for reward models)."""
    if not signal:
        return None
    if len(signal) == 1:
        return scores[signal[0][0]]
    total = sum(w for _, w in signal)
    return sum(w * within_prompt_z(scores[s]) for s, w in signal) / total


def per_prompt(arm: dict[str, np.ndarray], base: dict[str, np.ndarray],
               signal: tuple[tuple[str, float], ...]) -> dict[str, np.ndarray]:
    """gold (mean gold score), win (vs the base's sample of the same index, ties half),
    hack_proxy (vs the demo reward model) and hack_own (vs the arm's own training signal)."""
    if list(arm["prompt_ids"]) != list(base["prompt_ids"]):
        raise ValueError("arm and base were scored on different held-out prompts")
    g, b = arm[GOLD], base[GOLD]
    valid = ~np.isnan(g) & ~np.isnan(b)
    win = np.where(valid, (g > b) + 0.5 * (g == b), np.nan)
    own = signal_scores(arm, signal)
    with warnings.catch_warnings():  # a prompt with no gold score is NaN, and says so
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return {"gold": np.nanmean(g, axis=1), "win": np.nanmean(win, axis=1),
                "hack_proxy": hack(g, arm[PROXY]),
                "hack_own": hack(g, own) if own is not None else np.full(len(g), np.nan)}


def self_check(cfg: Config, workdir: Path, heldout: list[dict], base_dir: Path,
               base_samples: pa.Table, policy_dir: Path, policy_samples: pa.Table,
               mine: dict[str, float]) -> dict:
    """``trainers.evaluate.evaluate_round`` on the same samples (base as round 0, the policy as
    round 1, training reward = the demo reward model): its gold score, hack rate and win rate
    against this harness's. They must agree to rounding."""
    from trainers.evaluate import evaluate_round

    evaluate_round(cfg, workdir, 0, base_samples, heldout, base_dir, base_dir)
    theirs = evaluate_round(cfg, workdir, 1, policy_samples, heldout, policy_dir, base_dir)
    pairs = {"gold": "gold_score", "hack_proxy": "hack_rate", "win": "win_rate_vs_base"}
    diff = {k: abs(mine[k] - theirs[v]) for k, v in pairs.items()}
    worst = max(diff.values())
    return {"evaluate_round": {v: theirs[v] for v in pairs.values()}, "harness": mine,
            "max_abs_diff": worst, "agree": bool(worst < 1e-9 and not math.isnan(worst))}
