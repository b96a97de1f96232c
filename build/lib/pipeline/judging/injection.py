"""Candidates that try to instruct the judge: detect them, and neutralise them in prompts.

Every candidate is shown to a judge inside ``<candidate id="N">...</candidate>`` blocks
after ``escape``: angle brackets and braces become look-alike full-width characters, so a
candidate can neither close its block, open a fake one, nor smuggle a JSON verdict that a
careless parser of the prompt could pick up. ``detect`` flags the attempt, and the flag is
stored with the candidate so audits and the consensus can see it.
"""

from __future__ import annotations

import re

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("instruction_override", re.compile(
        r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,30}"
        r"\b(instruction|prompt|rule|direction)s?", re.I | re.S)),
    ("rating_demand", re.compile(
        r"\b(rate|score|rank|grade|give)\b.{0,30}\b(this|me|it|answer|candidate)\b.{0,30}"
        r"\b(10|ten|100|highest|best|first|top|perfect)\b", re.I | re.S)),
    ("role_play", re.compile(r"\b(you are now|as the judge|system prompt|new instructions?)\b",
                             re.I)),
    ("fake_delimiter", re.compile(r"</?\s*(candidate|task|system|judge|instructions?)\b", re.I)),
    ("fake_verdict", re.compile(r"[{\[]\s*\"?(scores?|ranking|winner|verdict|better)\"?\s*:",
                                re.I)),
]

_ESCAPES = str.maketrans({"<": "\uff1c", ">": "\uff1e", "{": "\uff5b", "}": "\uff5d"})


def detect(text: str) -> str | None:
    """Comma-separated names of the patterns found, or None for a clean text."""
    hits = [name for name, pattern in _PATTERNS if pattern.search(text)]
    return ",".join(hits) or None


def escape(text: str) -> str:
    """Text safe to place inside a candidate block of a judge prompt."""
    return text.translate(_ESCAPES)
