"""The evidence benchmark's design: its sizes, its data conditions (views) and its arms.

A *view* is one data condition, a workdir of its own: which of a seed's training prompts it
holds (an offset and a count into that seed's share of the pool), the group size k, and the
judges it runs. Its candidates are the first k of the k=16 samples vLLM drew once for those
prompts, so every k shares its samples with every larger k, and every smaller prompt set is
the start of every larger one (nested subsamples: the differences between arms are paired).

An *arm* is one way to turn a view into a trained policy: the consensus it trains on
(``rank.weights``, as a user sets them), the loss, and the annotation set whose simulated
people join that consensus. Arms that differ only in weights or loss share a view's
judgments. Each question compares a few arms; some arms serve several questions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GOLD = "verifier:sort_digits"
PROXY = "rm:demo-rm"  # the demo reward model: the one training signal most arms use
EXTRA_RMS = ("rm-seed1", "rm-seed2")  # the ensemble's other members: other seeds and data
ENSEMBLE = "rm-ensemble:mean"
LLM = "llm:judge"


@dataclass(frozen=True)
class Settings:
    seeds: int
    n: int  # N: training prompts per round
    heldout_pool: int  # held-out prompts available; the sizing step picks how many to use
    heldout_min: int
    eval_k: int  # samples per held-out prompt
    bootstrap: int
    target_eval_mde: float  # gold difference evaluation noise alone must not hide (80% power)
    annotator_noise: float  # sd of the Gaussian noise simulated people add to the gold score
    pool_k: int = 16
    shard_size: int = 64
    quick: bool = False
    demo_model_sets: dict = field(default_factory=dict)  # build-demo-model overrides

    @property
    def pool_prompts_per_seed(self) -> int:
        return 3 * self.n  # three rounds of N (Q4); every other view is a prefix of it


FULL = Settings(seeds=5, n=256, heldout_pool=1024, heldout_min=128, eval_k=4, bootstrap=4000,
                target_eval_mde=0.01, annotator_noise=0.3)
# Tiny everything: the whole harness end to end in a couple of minutes (tested).
QUICK = Settings(seeds=2, n=16, heldout_pool=48, heldout_min=48, eval_k=4, bootstrap=400,
                 target_eval_mde=0.05, annotator_noise=0.3, shard_size=16, quick=True,
                 demo_model_sets={"demo_model.max_steps": 300, "demo_model.rm_prompts": 32,
                                  "demo_model.rm_steps": 40})


@dataclass(frozen=True)
class View:
    name: str
    k: int
    n: int  # training prompts (per round)
    rounds: int = 1  # > 1: the iterative view, n fresh prompts per round from 3N
    offset: int = 0
    reward_models: tuple[str, ...] = ("demo-rm",)
    llm: bool = False


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    view: str
    weights: tuple[str, ...] = (f"{PROXY}=1",)
    loss: str = "plackett_luce"
    annotations: str | None = None  # which simulated annotation set joins the consensus
    signal: tuple[tuple[str, float], ...] = ((PROXY, 1.0),)  # its training signal, for hacks
    round: int = 1  # iterative arms: the policy trained after this many rounds


def views(s: Settings, llm: bool) -> list[View]:
    n = s.n
    three = (PROXY.removeprefix("rm:"), *EXTRA_RMS)
    return [
        View("k4", 4, n, reward_models=three, llm=llm),
        View("k2", 2, n), View("k8", 8, n), View("k16", 16, n),
        View("k2-2n", 2, 2 * n), View("k8-half", 8, n // 2), View("k16-quarter", 16, n // 4),
        View("k4-3n", 4, 3 * n),
        View("iter", 4, n, rounds=3),
    ]


# Annotation sets on the k4 view: name -> (share of groups, how the groups are chosen).
ANNOTATION_SETS = {"r10": (0.10, "random"), "r50": (0.50, "random"),
                   "d10": (0.10, "disagreement"), "all": (1.0, "random")}


def _humans(name: str, weight: float = 2.0) -> str:
    return f"human:{name}-*={weight}"


def arms(llm: bool) -> list[Arm]:
    ens = tuple((f"rm:{m}", 1.0) for m in (PROXY.removeprefix("rm:"), *EXTRA_RMS))
    out = [
        Arm("dpo-k4", "DPO best vs worst, k=4", "k4", loss="dpo"),
        Arm("pl-k4", "Plackett-Luce, k=4", "k4"),
        Arm("pl-k8", "Plackett-Luce, k=8", "k8"),
        Arm("pl-k2", "Plackett-Luce, k=2", "k2"),
        Arm("pl-k16", "Plackett-Luce, k=16", "k16"),
        Arm("pl-k2-2n", "k=2 on 2N prompts", "k2-2n"),
        Arm("pl-k8-half", "k=8 on N/2 prompts", "k8-half"),
        Arm("pl-k16-quarter", "k=16 on N/4 prompts", "k16-quarter"),
        Arm("rm-r10", "RM + annotators on 10% (random)", "k4",
            weights=(f"{PROXY}=1", _humans("r10")), annotations="r10"),
        Arm("rm-d10", "RM + annotators on 10% (most disagreement)", "k4",
            weights=(f"{PROXY}=1", _humans("d10")), annotations="d10"),
        Arm("rm-r50", "RM + annotators on 50% (random)", "k4",
            weights=(f"{PROXY}=1", _humans("r50")), annotations="r50"),
        Arm("human-r10", "annotators only, 10% of groups", "k4",
            weights=(_humans("r10"),), annotations="r10", signal=()),
        Arm("human-all", "annotators only, every group", "k4",
            weights=(_humans("all"),), annotations="all", signal=()),
        Arm("offline-3n", "offline: one round on 3N prompts", "k4-3n"),
        Arm("iter-r1", "iterative, after round 1 (N prompts)", "iter", round=1),
        Arm("iter-r2", "iterative, after round 2 (2N prompts)", "iter", round=2),
        Arm("iter-r3", "iterative: three rounds of N", "iter", round=3),
        Arm("ensemble", "ensemble of three reward models", "k4",
            weights=(f"{ENSEMBLE}=1",), signal=ens),
    ]
    if llm:
        out.append(Arm("rm-llm", "reward model + LLM judge", "k4",
                       weights=(f"{PROXY}=1", f"{LLM}=0.5"),
                       signal=((PROXY, 1.0), (LLM, 0.5))))
    # Whatever an arm does not name stays out of its consensus (rank.default_weight is 1).
    return [Arm(a.name, a.label, a.view, (*a.weights, "*=0"), a.loss, a.annotations, a.signal,
                a.round) for a in out]


@dataclass(frozen=True)
class Comparison:
    label: str
    a: str  # arm
    b: str  # arm, or "base"


@dataclass(frozen=True)
class Question:
    key: str
    title: str
    arms: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    metrics: tuple[str, ...] = ("gold", "win", "hack_proxy")


def questions(llm: bool) -> list[Question]:
    c = Comparison
    q5_arms = ("pl-k4", "ensemble") + (("rm-llm",) if llm else ())
    q5_cmp = (c("ensemble - RM", "ensemble", "pl-k4"),) + (
        (c("RM + LLM judge - RM", "rm-llm", "pl-k4"),) if llm else ())
    return [
        Question("q1", "The seed's table in miniature", ("dpo-k4", "pl-k4", "pl-k8"),
                 (c("PL k=4 - DPO k=4", "pl-k4", "dpo-k4"), c("PL k=8 - PL k=4", "pl-k8", "pl-k4"),
                  c("PL k=8 - DPO k=4", "pl-k8", "dpo-k4"))),
        Question("q2", "Best group size k",
                 ("pl-k2", "pl-k4", "pl-k8", "pl-k16", "pl-k2-2n", "pl-k8-half",
                  "pl-k16-quarter"),
                 (c("equal prompts: k=2 - k=4", "pl-k2", "pl-k4"),
                  c("equal prompts: k=8 - k=4", "pl-k8", "pl-k4"),
                  c("equal prompts: k=16 - k=4", "pl-k16", "pl-k4"),
                  c("equal budget: k=2 - k=4", "pl-k2-2n", "pl-k4"),
                  c("equal budget: k=8 - k=4", "pl-k8-half", "pl-k4"),
                  c("equal budget: k=16 - k=4", "pl-k16-quarter", "pl-k4"))),
        Question("q3", "Human + AI rankings",
                 ("pl-k4", "rm-r10", "rm-d10", "rm-r50", "human-r10", "human-all"),
                 (c("RM + 10% random - RM only", "rm-r10", "pl-k4"),
                  c("RM + 50% random - RM only", "rm-r50", "pl-k4"),
                  c("annotators on every group - RM only", "human-all", "pl-k4"),
                  c("annotators only 10% - RM only", "human-r10", "pl-k4"),
                  c("10%: most disagreement - random", "rm-d10", "rm-r10")),
                 metrics=("gold", "win")),
        Question("q4", "Offline vs iterative", ("offline-3n", "iter-r1", "iter-r2", "iter-r3"),
                 (c("three rounds of N - one round of 3N", "iter-r3", "offline-3n"),
                  c("iterative: round 3 - round 1", "iter-r3", "iter-r1"))),
        Question("q5", "Reward-model collusion", q5_arms, q5_cmp,
                 metrics=("gold", "hack_proxy", "hack_own")),
    ]


def selection(keys: list[str] | None, s: Settings, llm: bool
              ) -> tuple[list[Question], list[Arm], list[View]]:
    """The questions asked (all by default), the arms they compare and the views those arms
    train on. Plackett-Luce k=4 and its view are always in: every question's baseline and
    the self-check's policy. A folder keeps whatever was trained, so a run of some questions
    followed by a run of all resumes the shared arms."""
    every = questions(llm)
    known = [q.key for q in every]
    if keys:
        unknown = sorted(set(keys) - set(known))
        if unknown:
            raise SystemExit(f"evidence: unknown question(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(known)}")
    chosen = [q for q in every if not keys or q.key in keys]
    arm_names = {"pl-k4"} | {a for q in chosen for a in q.arms} | {
        x for q in chosen for c in q.comparisons for x in (c.a, c.b) if x != "base"}
    chosen_arms = [a for a in arms(llm) if a.name in arm_names]
    view_names = {"k4"} | {a.view for a in chosen_arms}
    return chosen, chosen_arms, [v for v in views(s, llm) if v.name in view_names]
