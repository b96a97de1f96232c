"""Score arbitrary groups of samples with one configured source, outside the judging stage.

Evaluation uses it for the gold source and the training reward on held-out samples: the
same judges, the same inputs (the whole conversation), one value per sample, NaN where the
judge failed. LLM judges score listwise; a sample's value is its mean score over the views
(pairwise mode: its share of reconciled wins).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from pipeline.config import Config
from pipeline.judging.groups import JudgeGroup
from pipeline.judging.sources import SourceSpec, connect_llm_judge, judge_endpoint


def _values(rows: list[dict], groups: list[JudgeGroup]) -> list[float]:
    by_id: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "scored" and r["value"] is not None and r["view"] >= 0 \
                and r["kind"] == "score":
            by_id.setdefault(r["candidate_id"], []).append(r["value"])
    return [sum(v) / len(v) if (v := by_id.get(c)) else math.nan
            for g in groups for c in g.candidate_ids]


def _pairwise_share(rows: list[dict], groups: list[JudgeGroup]) -> list[float]:
    wins: dict[str, list[float]] = {}
    for r in rows:
        if r["view"] == -1 and r["status"] == "scored" and r["kind"] == "pairwise":
            wins.setdefault(r["candidate_id"], []).append(r["value"])
            wins.setdefault(r["opponent_id"], []).append(1 - r["value"])
    return [sum(v) / len(v) if (v := wins.get(c)) else math.nan
            for g in groups for c in g.candidate_ids]


class SampleScorer:
    """Holds the models (and the judge server) of the sources it was asked for, so that
    several rounds' samples can be scored without reloading."""

    def __init__(self, cfg: Config, workdir, endpoint=None) -> None:
        self.cfg, self.workdir, self.endpoint = cfg, workdir, endpoint
        self._stack = contextlib.ExitStack()
        self._loaded: dict[str, object] = {}

    def __enter__(self) -> SampleScorer:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def score(self, spec: SourceSpec, groups: list[JudgeGroup],
              members: list[SourceSpec] | None = None) -> list[float]:
        if spec.kind == "verifier":
            from pipeline.judging.verifier import VerifierJudge

            judge = self._get(spec.source, lambda: VerifierJudge(self.cfg.judging.verifier))
            return _values(judge.judge(groups), groups)
        if spec.kind == "reward_model":
            return _values(self._rm(spec).judge(groups), groups)
        if spec.kind == "ensemble":
            from pipeline.judging.reward_model import combine_scores

            rows = combine_scores([self._rm(m).judge(groups) for m in members or []],
                                  self.cfg.judging.combine)
            return _values(rows, groups)
        if spec.kind == "llm":
            judge = self._get(spec.source, self._llm)
            rows = [r for _, group_rows in judge.judge_groups(groups) for r in group_rows]
            if self.cfg.llm_judge.mode == "pairwise":
                return _pairwise_share(rows, groups)
            return _values(rows, groups)
        raise ValueError(f"cannot score samples with {spec.source} ({spec.kind})")

    def _rm(self, spec: SourceSpec):
        from pipeline.judging.reward_model import RewardModelScorer

        j = self.cfg.judging
        return self._get(spec.source, lambda: RewardModelScorer(
            spec.model_dir, spec.source[3:], j.max_batch_tokens, j.max_length))

    def _llm(self):
        url, model = self.endpoint.get() if self.endpoint is not None else \
            self._stack.enter_context(judge_endpoint(self.cfg, self.workdir))
        return connect_llm_judge(self.cfg, url, model)

    def _get(self, key: str, build):
        if key not in self._loaded:
            self._loaded[key] = build()
        return self._loaded[key]


@contextlib.contextmanager
def sample_scorer(cfg: Config, workdir, endpoint=None) -> Iterator[SampleScorer]:
    with SampleScorer(cfg, workdir, endpoint) as scorer:
        yield scorer
