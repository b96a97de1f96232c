"""Rule-based verifier judgments: the task's gold verifier scores every candidate.

In the demo the gold verifier is the held-out measure of quality, so the loop must not train
on it (``rank.source`` chooses what training sees); users with a trustworthy verifier may.
"""

from __future__ import annotations

from pipeline.judging.groups import JudgeGroup, judgment_row
from pipeline.tasks import get_task


def verifier_source(task_name: str) -> str:
    return f"verifier:{task_name}"


class VerifierJudge:
    def __init__(self, task_name: str) -> None:
        self.task = get_task(task_name)
        self.source = verifier_source(task_name)

    def judge(self, groups: list[JudgeGroup]) -> list[dict]:
        rows = []
        for g in groups:
            for i, text in enumerate(g.texts):
                if g.reference is None:
                    rows.append(judgment_row(g, i, self.source, "score", 0, None,
                                             "no reference answer for this prompt"))
                else:
                    rows.append(judgment_row(g, i, self.source, "score", 0,
                                             self.task.gold_score(g.reference, text)))
        return rows
