"""Judge prompts, rendered from the template files beside this module."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pipeline.judging.injection import escape

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def template(name: str) -> str:
    return (TEMPLATES / f"{name}.txt").read_text()


def listwise_prompt(task_prompt: str, shown_texts: list[str], low: float, high: float) -> str:
    blocks = "\n".join(f'<candidate id="{i + 1}">{escape(t)}</candidate>'
                       for i, t in enumerate(shown_texts))
    return template("listwise").format(prompt=escape(task_prompt), candidates=blocks,
                                       low=_num(low), high=_num(high), k=len(shown_texts))


def pairwise_prompt(task_prompt: str, a: str, b: str) -> str:
    return template("pairwise").format(prompt=escape(task_prompt), a=escape(a), b=escape(b))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
