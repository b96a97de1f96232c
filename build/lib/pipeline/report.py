"""The loop's report: PNG plots and a Markdown summary of each round's evaluation."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.atomic import write_text_atomic

COLUMNS = [("gold_score", "gold"), ("exact", "exact"), ("train_reward", "train reward"),
           ("kl_to_base", "KL to base"), ("length", "length"), ("hack_rate", "hack rate"),
           ("win_rate_vs_base", "win vs base")]


def summary_rows(evals: dict[int, dict[str, float]]) -> list[list[str]]:
    rows = []
    for r in sorted(evals):
        m = evals[r]
        cells = [str(r)] + [_fmt(m.get(key)) for key, _ in COLUMNS]
        cells.append("OVER-OPTIMISED" if m.get("overoptimised") else "")
        rows.append(cells)
    return rows


def header() -> list[str]:
    return ["round"] + [label for _, label in COLUMNS] + ["flag"]


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def write_report(workdir: Path, evals: dict[int, dict[str, float]],
                 notes: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(workdir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    rounds = sorted(evals)
    series = {key: [evals[r].get(key, math.nan) for r in rounds] for key, _ in COLUMNS}

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, series["gold_score"], "o-", color="tab:green", label="gold score (held out)")
    ax.set_xlabel("round (policy after that many trainings)")
    ax.set_ylabel("gold verifier score", color="tab:green")
    ax2 = ax.twinx()
    ax2.plot(rounds, series["train_reward"], "s--", color="tab:blue", label="training reward")
    ax2.set_ylabel("training reward (reward model)", color="tab:blue")
    for r in rounds:
        if evals[r].get("overoptimised"):
            ax.axvline(r, color="tab:red", alpha=0.3)
    ax.set_xticks(rounds)
    ax.set_title("Gold vs training reward by round")
    fig.tight_layout()
    fig.savefig(out / "gold_vs_training_reward.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rounds, series["kl_to_base"], "o-", color="tab:purple", label="KL to base")
    ax.plot(rounds, series["hack_rate"], "s--", color="tab:red", label="reward-hacking rate")
    ax.set_xlabel("round")
    ax.set_xticks(rounds)
    ax.legend()
    ax.set_title("Distance from the base policy, and reward hacking")
    fig.tight_layout()
    fig.savefig(out / "kl_and_hacking.png", dpi=120)
    plt.close(fig)

    lines = ["# Loop report", "", "| " + " | ".join(header()) + " |",
             "|" + "---|" * len(header())]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(evals)]
    lines += ["", "![gold vs training reward](gold_vs_training_reward.png)",
              "![KL and hacking](kl_and_hacking.png)", ""]
    lines += [f"- {note}" for note in notes or []]
    path = write_text_atomic("\n".join(lines) + "\n", out / "summary.md")
    return path
