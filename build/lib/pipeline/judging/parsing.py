"""Parsers of judge output: pure functions from raw text to values or an explicit failure.

A failure is never turned into a score or a rank: it comes back as ``Parsed(ok=False,
error=...)`` and is stored as a failed judgment with the raw text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_REFUSAL = re.compile(r"\b(I can(no|')t|I'm sorry|I am sorry|I won't|as an AI|unable to)\b",
                      re.I)


@dataclass(frozen=True)
class Parsed:
    ok: bool
    values: list[float] | None = None
    error: str | None = None


def _first_json_object(text: str) -> dict | None:
    """The first complete JSON object in the text (models wrap JSON in prose or fences)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _fail(text: str, error: str) -> Parsed:
    if _REFUSAL.search(text or ""):
        error = "refusal: " + error
    return Parsed(False, None, error)


def parse_scores(text: str, k: int, low: float, high: float) -> Parsed:
    """``{"scores": [s_1, ..., s_k]}`` in the order shown; every score within [low, high]."""
    if not text or not text.strip():
        return _fail(text, "empty output")
    obj = _first_json_object(text)
    if obj is None:
        return _fail(text, "no complete JSON object (prose or truncated JSON)")
    scores = obj.get("scores")
    if not isinstance(scores, list):
        return _fail(text, "JSON has no 'scores' list")
    if len(scores) != k:
        return _fail(text, f"wrong number of scores: {len(scores)} for {k} candidates")
    if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        return _fail(text, "a score is not a number")
    if any(not (low <= s <= high) for s in scores):
        return _fail(text, f"score out of range [{low}, {high}]")
    return Parsed(True, [float(s) for s in scores])


def parse_pairwise(text: str) -> Parsed:
    """``{"better": "A"}`` / ``"B"`` / ``"tie"``: value 1.0 if the first shown wins,
    0.0 if the second, 0.5 for a tie."""
    obj = _first_json_object(text or "")
    if obj is None:
        return _fail(text, "no complete JSON object (prose or truncated JSON)")
    better = str(obj.get("better", "")).strip().lower()
    mapping = {"a": 1.0, "b": 0.0, "tie": 0.5}
    if better not in mapping:
        return _fail(text, f"'better' must be A, B or tie, got {obj.get('better')!r}")
    return Parsed(True, [mapping[better]])
