"""The task protocol and its registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TaskPrompt:
    """One prompt of a task, with the answer the gold verifier compares against."""

    prompt_id: str
    split: str  # "train" or "heldout"
    prompt: str
    reference: str


class Task(Protocol):
    name: str

    def prompts(self, split: str, n: int, seed: int) -> list[TaskPrompt]:
        """Deterministic prompts: the same (split, n, seed) always gives the same list."""
        ...

    def gold_score(self, reference: str, completion: str) -> float:
        """Partial credit in [0, 1]; 1.0 means exactly right."""
        ...


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    def wrap(factory: Callable[[], Task]) -> Callable[[], Task]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def registered_tasks() -> list[str]:
    _load_builtin_tasks()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    _load_builtin_tasks()
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def _load_builtin_tasks() -> None:
    # Imported lazily so that registering has no import-order trap.
    from pipeline.tasks import sort_digits  # noqa: F401


def write_prompts_file(task: Task, path, n_train: int, n_heldout: int, seed: int = 0) -> int:
    """The task's prompts as a user's prompts file: JSON lines of ``{id, messages,
    reference, split}`` (read back with prompts.column = messages, id_column = id,
    reference_column = reference, split_column = split). Returns the rows written."""
    import json
    from pathlib import Path

    from pipeline.atomic import write_text_atomic

    rows = task.prompts("train", n_train, seed=seed) + task.prompts("heldout", n_heldout,
                                                                     seed=seed)
    lines = [json.dumps({"id": p.prompt_id, "messages": [{"role": "user", "content": p.prompt}],
                         "reference": p.reference, "split": p.split}) for p in rows]
    write_text_atomic("".join(line + "\n" for line in lines), Path(path))
    return len(lines)
