"""Judge prompts, rendered from the template files beside this module.

The judge sees the whole conversation (every turn, system included), each turn in a
``<turn role=...>`` block and each candidate in a ``<candidate>`` block, all escaped (see
``injection.escape``) so that no text can close its block or fake another.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pipeline.judging.injection import escape

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def template(name: str) -> str:
    return (TEMPLATES / f"{name}.txt").read_text()


def render_conversation(messages: list[dict]) -> str:
    return "\n".join(f'<turn role="{m["role"]}">{escape(m["content"])}</turn>' for m in messages)


def listwise_prompt(messages: list[dict], shown_texts: list[str], low: float, high: float) -> str:
    blocks = "\n".join(f'<candidate id="{i + 1}">{escape(t)}</candidate>'
                       for i, t in enumerate(shown_texts))
    return template("listwise").format(conversation=render_conversation(messages),
                                       candidates=blocks, low=_num(low), high=_num(high),
                                       k=len(shown_texts))


def pairwise_prompt(messages: list[dict], a: str, b: str) -> str:
    return template("pairwise").format(conversation=render_conversation(messages), a=escape(a),
                                       b=escape(b))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
