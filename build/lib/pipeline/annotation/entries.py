"""What every import format is read into: one ``Entry`` per record of the file.

A record is what a person sees as one unit of the file: a CSV row, a line of JSON lines, one
Label Studio annotation, one Argilla response. Each entry ends in exactly one of three
states: accepted (its votes become judgments), quarantined (``reason``), or skipped
(``skip``: nothing to import, such as a row nobody annotated or a cancelled annotation), so
``accepted + quarantined + skipped = rows read`` holds for every file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Vote:
    """One judgment of a candidate: a rank (1 = best, equal ranks tie) or a pairwise verdict
    from ``candidate_id``'s side against ``opponent_id`` (1 win, 0 loss, 0.5 tie)."""

    candidate_id: str
    kind: str
    value: float
    opponent_id: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return self.candidate_id, self.opponent_id


@dataclass
class Entry:
    row: int  # the number a person looks up: spreadsheet row, text line, or result position
    raw: dict
    source: str | None = None  # human:NAME, or suggestion:AGENT for a tool's machine label
    group_id: str | None = None
    votes: list[Vote] = field(default_factory=list)
    reason: str | None = None  # quarantined, and why
    skip: str | None = None  # nothing to import, and why (counted, never quarantined)
    whole_group: bool = False  # the votes are one complete ranking (not one row of many)

    @property
    def accepted(self) -> bool:
        return self.reason is None and self.skip is None


def is_formula(value) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_START)


def blank(value) -> bool:
    return value is None or str(value).strip() == ""


def human(annotator: str) -> str:
    return f"human:{annotator}"
