"""Verifiable tasks: deterministic prompts plus a rule-based gold verifier.

A task is the embedded default's ground truth. The gold verifier gives partial credit in
[0, 1] so that a reward signal exists below "exactly right", and it is the held-out measure
the loop uses to catch reward hacking: it is never a training signal in the demo.
"""

from pipeline.tasks.base import Task, TaskPrompt, get_task, registered_tasks

__all__ = ["Task", "TaskPrompt", "get_task", "registered_tasks"]
