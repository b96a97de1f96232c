"""Sort a short list of digits: the embedded default's verifiable task.

Prompt ``S 39141=`` asks for ``11349``. Lengths vary so the task has easy and hard items.
Train and held-out prompts are drawn from disjoint seeds of one generator and de-duplicated
against each other, so held-out scores measure generalisation rather than recall.
"""

from __future__ import annotations

import hashlib
import random

from pipeline.tasks.base import TaskPrompt, register_task

PROMPT_PREFIX = "S "
PROMPT_SUFFIX = "="


class SortDigits:
    name = "sort_digits"

    def __init__(self, min_len: int = 4, max_len: int = 7) -> None:
        self.min_len = min_len
        self.max_len = max_len

    def _digits(self, rng: random.Random) -> str:
        n = rng.randint(self.min_len, self.max_len)
        return "".join(rng.choice("0123456789") for _ in range(n))

    def prompts(self, split: str, n: int, seed: int) -> list[TaskPrompt]:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        # Held-out items are those whose hash lands in the last 1/8 of the space; the two
        # splits therefore never share a digit string, whatever n and seed are.
        rng = random.Random(f"{self.name}:{seed}:{split}")
        out: list[TaskPrompt] = []
        seen: set[str] = set()
        while len(out) < n:
            digits = self._digits(rng)
            in_heldout = _bucket(digits) == 7
            if digits in seen or in_heldout != (split == "heldout"):
                continue
            seen.add(digits)
            out.append(
                TaskPrompt(
                    prompt_id=f"{self.name}-{split}-{digits}",
                    split=split,
                    prompt=f"{PROMPT_PREFIX}{digits}{PROMPT_SUFFIX}",
                    reference="".join(sorted(digits)),
                )
            )
        return out

    def gold_score(self, reference: str, completion: str) -> float:
        """Fraction of positions right, over the longer of the two strings.

        Exact gives 1.0; a right answer with trailing junk or a missing digit loses credit in
        proportion, so the verifier ranks near-misses above nonsense.
        """
        answer = completion.strip()
        if not reference:
            return 1.0 if not answer else 0.0
        hits = sum(a == b for a, b in zip(answer, reference, strict=False))
        return hits / max(len(answer), len(reference))


def _bucket(digits: str) -> int:
    return hashlib.blake2b(digits.encode(), digest_size=1).digest()[0] % 8


@register_task("sort_digits")
def _factory() -> SortDigits:
    return SortDigits()
