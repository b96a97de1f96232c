"""Rule-based verifiers: a built-in task's checker, or any function the user names.

``judging.verifier`` is a built-in task name (``sort_digits``) or ``pkg.module:function``, a
function ``(prompt_row: dict, completion: str) -> float`` in [0, 1]. ``prompt_row`` is the
prompt's input row (every column of the user's file) plus ``prompt_id``, ``messages`` and
``reference``. A verifier that raises or returns something outside [0, 1] gives a failed
judgment with the error kept, never a score.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from collections.abc import Callable

from pipeline.config import ConfigError
from pipeline.judging.groups import JudgeGroup, judgment_row
from pipeline.judging.naming import verifier_name

VerifyFn = Callable[[dict, str], float]


def _task_verifier(name: str) -> VerifyFn:
    from pipeline.tasks import get_task

    task = get_task(name)

    def verify(row: dict, completion: str) -> float:
        if row.get("reference") is None:
            raise ValueError("no reference answer for this prompt (prompts.reference_column)")
        return task.gold_score(row["reference"], completion)

    verify.__wrapped__ = task.gold_score  # what the fingerprint reads
    return verify


def load_verifier(spec: str) -> VerifyFn:
    from pipeline.tasks import registered_tasks

    if ":" not in spec:
        if spec not in registered_tasks():
            raise ConfigError(f"judging.verifier: unknown built-in {spec!r}; use one of "
                              f"{registered_tasks()} or 'pkg.module:function'")
        return _task_verifier(spec)
    module_name, _, fn_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"judging.verifier: cannot import {module_name!r} ({err}); is it "
                          "installed or on PYTHONPATH?") from err
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"judging.verifier: {module_name} has no function {fn_name!r}")
    return fn


def verifier_fingerprint(spec: str) -> str:
    """The spec plus the function's source: editing the verifier invalidates its judgments."""
    fn = load_verifier(spec)
    target = getattr(fn, "__wrapped__", fn)
    try:
        code = inspect.getsource(target)
    except (OSError, TypeError):
        code = ""
    return hashlib.sha256(f"{spec}\n{code}".encode()).hexdigest()[:12]


def verify_one(fn: VerifyFn, row: dict, completion: str) -> tuple[float | None, str | None]:
    try:
        value = float(fn(row, completion))
    except Exception as err:  # noqa: BLE001 - a user's verifier may fail any way; keep why
        return None, f"verifier raised {type(err).__name__}: {err}"
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return None, f"verifier returned {value}, outside [0, 1]"
    return value, None


def verifier_row(group: JudgeGroup) -> dict:
    return {**group.row, "prompt_id": group.prompt_id, "messages": group.messages,
            "reference": group.reference}


class VerifierJudge:
    def __init__(self, spec: str) -> None:
        self.fn = load_verifier(spec)
        self.source = f"verifier:{verifier_name(spec)}"

    def judge(self, groups: list[JudgeGroup]) -> list[dict]:
        rows = []
        for g in groups:
            prompt_row = verifier_row(g)
            for i, text in enumerate(g.texts):
                value, error = verify_one(self.fn, prompt_row, text)
                rows.append(judgment_row(g, i, self.source, "score", 0, value, error))
        return rows
