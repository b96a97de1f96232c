"""LLM judges behind any OpenAI-compatible endpoint, through the ``openai`` client.

Listwise: one request scores a whole group as shown in one view; every group is shown in
``views`` orders (view 1 reverses view 0) and the scores are mapped back to canonical
candidates. Pairwise: each pair is asked in both orders. Either way the views are then
reconciled into pairwise verdicts (view -1): where the views disagree, the verdict is a tie.

Failure is data: a request that still fails after ``max_attempts`` (429 honouring
Retry-After, 5xx, timeouts, resets) or an answer that does not parse is stored as failed
rows with the error and raw text; it never becomes a score. The client's own retries are off
so that every attempt is counted against ``max_requests``. When the cap is reached, the
groups not yet finished stay pending (not failed) for the next run.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import combinations

from pipeline.config import LLMJudgeConfig
from pipeline.judging.groups import JudgeGroup, judgment_row
from pipeline.judging.parsing import Parsed, parse_pairwise, parse_scores
from pipeline.judging.prompts import listwise_prompt, pairwise_prompt
from pipeline.judging.views import position_of, to_canonical, views_for


class RequestCapReached(RuntimeError):
    """The per-run request cap is spent; unfinished groups stay pending."""


@dataclass
class RequestBudget:
    cap: int
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> None:
        with self._lock:
            if self.used >= self.cap:
                raise RequestCapReached(f"request cap of {self.cap} reached")
            self.used += 1


@dataclass
class Reply:
    text: str | None
    error: str | None
    attempts: int
    truncated: bool = False


def retry_after_seconds(headers, default: float) -> float:
    """Retry-After as seconds or an HTTP date; the default when absent or unreadable."""
    value = (headers or {}).get("retry-after")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else default


class JudgeClient:
    def __init__(self, cfg: LLMJudgeConfig, base_url: str, model: str,
                 budget: RequestBudget, sleep: Callable[[float], None] = time.sleep) -> None:
        from openai import OpenAI

        self.cfg, self.model, self.budget, self.sleep = cfg, model, budget, sleep
        self.prompt_tokens = self.completion_tokens = 0  # as the endpoint reports them
        self._usage_lock = threading.Lock()
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(cfg.api_key_env) or "none",
                             max_retries=0, timeout=cfg.timeout_s)

    def check_reachable(self) -> list[str]:
        """Model ids served at the endpoint; raises if it does not answer."""
        return [m.id for m in self.client.models.list().data]

    def ask(self, prompt: str, constraint: dict | None, seed: int) -> Reply:
        import openai

        cfg = self.cfg
        error = "no attempt made"
        for attempt in range(1, cfg.max_attempts + 1):
            self.budget.take()
            backoff = min(cfg.max_backoff_s, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            try:
                text, finish = self._create(prompt, constraint, seed)
                return Reply(text, None, attempt, truncated=finish == "length")
            except openai.RateLimitError as err:
                error = f"HTTP 429 rate limited: {_short(err)}"
                backoff = min(cfg.max_backoff_s, retry_after_seconds(err.response.headers, backoff))
            except openai.APITimeoutError:
                error = f"timeout after {cfg.timeout_s}s"
            except openai.APIConnectionError as err:
                error = f"connection error: {_short(err)}"
            except openai.APIStatusError as err:
                error = f"HTTP {err.status_code}: {_short(err)}"
                if err.status_code < 500 and err.status_code not in (408, 409):
                    return Reply(None, error, attempt)  # a client error will not heal
            if attempt < cfg.max_attempts:
                self.sleep(backoff)
        return Reply(None, f"{error} (after {cfg.max_attempts} attempts)", cfg.max_attempts)

    def _count(self, usage) -> None:
        if usage is not None:
            with self._usage_lock:
                self.prompt_tokens += usage.prompt_tokens or 0
                self.completion_tokens += usage.completion_tokens or 0

    def _create(self, prompt: str, constraint: dict | None, seed: int) -> tuple[str, str]:
        kwargs = dict(model=self.model, temperature=self.cfg.temperature,
                      max_tokens=self.cfg.max_tokens, seed=seed)
        if constraint:
            kwargs["extra_body"] = constraint
        if self.cfg.api == "chat":
            r = self.client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **kwargs)
            self._count(r.usage)
            choice = r.choices[0]
            return choice.message.content or "", choice.finish_reason
        r = self.client.completions.create(prompt=prompt, **kwargs)
        self._count(r.usage)
        return r.choices[0].text, r.choices[0].finish_reason


def _short(err: Exception) -> str:
    return str(err).replace("\n", " ")[:200]


def score_constraint(cfg: LLMJudgeConfig, k: int) -> dict | None:
    """vLLM's constrained decoding for the listwise answer (ignored by endpoints without it)."""
    if cfg.structured == "regex":
        digit = f"[{int(cfg.score_low)}-{int(cfg.score_high)}]"
        body = ", ".join([digit] * k)
        return {"structured_outputs": {"regex": r'\{"scores": \[' + body + r"\]\}"}}
    if cfg.structured == "json_schema":
        schema = {"type": "object", "required": ["scores"], "properties": {"scores": {
            "type": "array", "minItems": k, "maxItems": k,
            "items": {"type": "number", "minimum": cfg.score_low, "maximum": cfg.score_high}}}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "scores", "schema": schema}}}
    return None


def pairwise_constraint(cfg: LLMJudgeConfig) -> dict | None:
    if cfg.structured == "regex":
        return {"structured_outputs": {"regex": r'\{"better": "(A|B|tie)"\}'}}
    if cfg.structured == "json_schema":
        schema = {"type": "object", "required": ["better"],
                  "properties": {"better": {"enum": ["A", "B", "tie"]}}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "verdict", "schema": schema}}}
    return None


class LLMJudge:
    """Judges groups; ``judge_groups`` yields (group, rows) as groups finish."""

    def __init__(self, cfg: LLMJudgeConfig, client: JudgeClient, seed: int = 0) -> None:
        self.cfg, self.client, self.seed = cfg, client, seed
        self.source = f"llm:{cfg.name}"

    def judge_groups(self, groups: Iterable[JudgeGroup]) -> Iterable[tuple[JudgeGroup, list]]:
        """Concurrently, up to ``concurrency`` groups in flight. Stops submitting when the
        request cap is reached; groups cut off by it are not yielded (they stay pending)."""
        judge = self._listwise if self.cfg.mode == "listwise" else self._pairwise
        pending = iter(groups)
        capped = False
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            running = {}
            while True:
                while not capped and len(running) < self.cfg.concurrency:
                    group = next(pending, None)
                    if group is None:
                        break
                    running[pool.submit(judge, group)] = group
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    group = running.pop(fut)
                    try:
                        yield group, fut.result()
                    except RequestCapReached:
                        capped = True

    def _listwise(self, group: JudgeGroup) -> list[dict]:
        cfg, k = self.cfg, group.k
        rows: list[dict] = []
        view_scores: list[list[float]] = []
        for v, perm in enumerate(views_for(group.group_id, k, cfg.views, self.seed)):
            shown = [group.texts[c] for c in perm]
            reply = self.client.ask(listwise_prompt(group.messages, shown, cfg.score_low,
                                                    cfg.score_high),
                                    score_constraint(cfg, k), seed=self.seed + v)
            parsed = _parse_reply(reply, lambda text: parse_scores(text, k, cfg.score_low,
                                                                   cfg.score_high))
            positions = position_of(perm)
            scores = to_canonical(perm, parsed.values) if parsed.ok else [None] * k
            for c in range(k):
                rows.append(judgment_row(group, c, self.source, "score", v, scores[c],
                                         parsed.error, reply.text, positions[c]))
            if parsed.ok:
                view_scores.append(scores)
        verdicts = [[_compare(s[i], s[j]) for s in view_scores]
                    for i, j in combinations(range(k), 2)]
        return rows + self._reconciled(group, verdicts)

    def _pairwise(self, group: JudgeGroup) -> list[dict]:
        rows: list[dict] = []
        verdicts = []
        for i, j in combinations(range(group.k), 2):
            pair_verdicts = []
            for v, (first, second) in enumerate(((i, j), (j, i))):
                reply = self.client.ask(
                    pairwise_prompt(group.messages, group.texts[first], group.texts[second]),
                    pairwise_constraint(self.cfg), seed=self.seed + v)
                parsed = _parse_reply(reply, parse_pairwise)
                # Verdicts are stored from i's side: 1 = i better than j.
                value = None
                if parsed.ok:
                    value = parsed.values[0] if first == i else 1.0 - parsed.values[0]
                    pair_verdicts.append(value)
                rows.append(judgment_row(group, i, self.source, "pairwise", v, value,
                                         parsed.error, reply.text, 0 if first == i else 1,
                                         opponent=j))
            verdicts.append(pair_verdicts)
        return rows + self._reconciled(group, verdicts)

    def _reconciled(self, group: JudgeGroup, verdicts: list[list[float]]) -> list[dict]:
        """View -1: one verdict per pair; views that disagree make a tie (position bias
        must not decide a preference)."""
        rows = []
        for (i, j), vs in zip(combinations(range(group.k), 2), verdicts, strict=True):
            if not vs:
                rows.append(judgment_row(group, i, self.source, "pairwise", -1, None,
                                         "no view of this pair parsed", opponent=j))
                continue
            value = vs[0] if all(v == vs[0] for v in vs) else 0.5
            rows.append(judgment_row(group, i, self.source, "pairwise", -1, value, opponent=j))
        return rows


def _compare(a: float, b: float) -> float:
    return 1.0 if a > b else 0.0 if a < b else 0.5


def _parse_reply(reply: Reply, parse: Callable[[str], Parsed]) -> Parsed:
    if reply.error:
        return Parsed(False, None, reply.error)
    parsed = parse(reply.text or "")
    if not parsed.ok and reply.truncated:
        return Parsed(False, None, f"truncated at max_tokens: {parsed.error}")
    return parsed
