"""The evidence benchmark's data: models, one k=16 generation, views of it, judging, people.

Everything goes through the library's public functions, as a user's script would: models
are built by ``grpo build-demo-model`` (and ``build_demo_reward_model`` for the ensemble's
other members), rounds are planned by ``generation.plan_round`` and written by the fleet's
generation jobs, judged by the fleet's judging jobs with ``configured_sources``, ranked by
``rank_inputs`` + ``rank_round`` and trained by ``trainers.loop.train``. Simulated people
fill in what ``export_annotation`` writes, and ``import_human_file`` reads it back.

The one seam: a view's round is not sampled again. ``ReplaySampler`` stands where the vLLM
sampler stands and hands ``generate_shard`` the first k of the k=16 candidates vLLM drew
once for those prompts (same per-prompt seeds, token ids, stop ids), so every k and every
prompt subset is a subsample of one generation.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.evidence_plan import GOLD, Arm, Settings, View
from pipeline import fleet_jobs, generation
from pipeline.annotation import export_annotation, import_human_file
from pipeline.config import Config, ConfigError, load_config
from pipeline.consensus.stage import rank_round
from pipeline.fleet import run_claimed
from pipeline.judging import stage
from pipeline.judging.sources import SharedEndpoint, configured_sources
from pipeline.leases import new_owner_id
from pipeline.rank_inputs import rank_inputs
from pipeline.rounds import relative_to_workdir, trained_policy_dir
from pipeline.schema import CANDIDATES
from pipeline.simulated_annotator import gold_scores
from pipeline.store import candidate_id, group_id
from trainers.loop import train

ROOT = Path(__file__).resolve().parent.parent


# --- models --------------------------------------------------------------------------------

def build_models(root: Path, s: Settings) -> dict:
    """The demo policy, reward model and prompts file (``grpo build-demo-model``, which also
    builds the demo LLM judge when the demo config judges with it), and two more reward
    models for the ensemble, built the same way from other seeds (so other sample pairs and
    another initialisation)."""
    from pipeline.demo_reward_model import build_demo_reward_model

    sets = {"demo_model.prompts_train": s.seeds * s.pool_prompts_per_seed,
            "demo_model.prompts_heldout": s.heldout_pool, **s.demo_model_sets}
    built: dict = {}
    if not (root / "models" / "demo-rm" / "config.json").exists():
        argv = [sys.executable, "-m", "flows.cli", "build-demo-model", "--workdir", str(root)]
        for key, value in sets.items():
            argv += ["--set", f"{key}={value}"]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"grpo build-demo-model failed:\n{done.stderr[-3000:]}")
        built["demo"] = "built"
    policy = root / "models" / "demo-policy"
    for i, name in enumerate(("rm-seed1", "rm-seed2"), 1):
        out = root / "models" / name
        if not (out / "config.json").exists():
            cfg = load_config(overrides={**sets, "demo_model.seed": i})
            built[name] = build_demo_reward_model(cfg, policy, out, show_progress=False).__dict__
    return built


def reports(root: Path) -> dict:
    """What the model builders measured (policy exact match, reward-model pair accuracy)."""
    out = {}
    for name, report in (("demo-policy", "demo_model_report.json"),
                         ("demo-rm", "reward_model_report.json"),
                         ("rm-seed1", "reward_model_report.json"),
                         ("rm-seed2", "reward_model_report.json")):
        path = root / "models" / name / report
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def trained_llm_judge(root: Path) -> Path | None:
    """The demo's trained LLM judge, or None when none was built or the judge resolves to the
    policy itself (an untrained judge answers "all 5" to nearly every group, so an arm with it
    would measure nothing). Resolved from the demo config exactly as ``grpo judge`` does."""
    from pipeline.resolve import judge_model_dir, resolve_policy

    cfg = load_config()
    try:
        judge = judge_model_dir(cfg, root)
    except ConfigError:
        return None
    if judge is None or judge.resolve() == resolve_policy(cfg, root).resolve():
        return None
    return judge


# --- configs -------------------------------------------------------------------------------

def config(root: Path, s: Settings, *, prompts: Path, n_train: int, heldout: int, k: int,
           reward_models: tuple[str, ...], llm_judge: Path | None = None, seed: int = 0,
           shard_size: int | None = None, **extra) -> Config:
    """The demo config with this run's paths and sizes: what a user passes with --set."""
    o = {"policy.model": str(root / "models" / "demo-policy"),
         "prompts.path": str(prompts), "prompts.n_train_per_round": n_train,
         "prompts.n_heldout": heldout, "generation.k": k,
         "generation.shard_size": shard_size or s.shard_size,
         "judging.sources": ["verifier", "reward_model"] + (["llm"] if llm_judge else []),
         "judging.reward_models": [str(root / "models" / m) for m in reward_models],
         "loop.gold": GOLD, "loop.eval_k": s.eval_k, "loop.annotator_noise": s.annotator_noise,
         "train.seed": seed,
         # Checkpoints guard long runs against crashes; these take seconds.
         "train.checkpoint_every": 1_000_000}
    if llm_judge:
        o["llm_judge.model"] = str(llm_judge)
    return load_config(overrides={**o, **extra})


# --- generation ----------------------------------------------------------------------------

def generate(workdir: Path, cfg: Config, plan, sampler=None) -> None:
    """The round's missing shards, through the fleet's generation jobs (one worker), with vLLM
    unless a sampler is given."""
    with fleet_jobs.engine(plan, cfg, workdir, sampler) as lazy:
        run_claimed(fleet_jobs.generation_jobs(workdir, plan, lazy), new_owner_id(),
                    cfg.generation.lease_ttl_s)


class Pool:
    """The one generation: k=16 samples of the base policy for every seed's 3N prompts, and
    the held-out prompts (their rows, in the pool's seeded order)."""

    def __init__(self, root: Path, s: Settings) -> None:
        self.root, self.s = root, s
        self.workdir = root / "pool"
        self.cfg = config(root, s, prompts=root / "prompts" / "demo-prompts.jsonl",
                          n_train=s.seeds * s.pool_prompts_per_seed, heldout=s.heldout_pool,
                          k=s.pool_k, reward_models=("demo-rm",), shard_size=256)
        self.policy = root / "models" / "demo-policy"
        self.plan = generation.plan_round(self.workdir, self.cfg, 0, self.policy)
        if len(self.plan.train) < s.seeds * s.pool_prompts_per_seed:
            raise ConfigError(f"the prompts file holds {len(self.plan.train)} train prompts, "
                              f"fewer than {s.seeds * s.pool_prompts_per_seed}; use a new --out")
        self._candidates: dict[str, list[dict]] | None = None

    def generate(self) -> None:
        generate(self.workdir, self.cfg, self.plan)

    def seed_prompts(self, seed: int) -> list[dict]:
        per = self.s.pool_prompts_per_seed
        return self.plan.train[seed * per:(seed + 1) * per]

    def heldout(self, n: int) -> list[dict]:
        return self.plan.heldout[:n]

    def candidates(self) -> dict[str, list[dict]]:
        if self._candidates is None:
            files = sorted((self.workdir / "rounds" / "r000" / "candidates").glob("*.parquet"))
            rows = pq.read_table(files).to_pylist()
            by_prompt: dict[str, list[dict]] = {}
            for r in sorted(rows, key=lambda r: (r["prompt_id"], r["candidate_idx"])):
                by_prompt.setdefault(r["prompt_id"], []).append(r)
            self._candidates = by_prompt
        return self._candidates


class ReplaySampler:
    """A sampler for ``generate_shard`` that returns the pool's first k candidates of each
    prompt instead of sampling: the prompt token ids and stop ids must be the pool's."""

    def __init__(self, pool: Pool, workdir: Path, k: int) -> None:
        self.pool, self.workdir, self.k = pool, workdir, k
        self.tokens = {p["prompt_id"]: list(p["prompt_token_ids"]) for p in pool.plan.train}

    def sample(self, prompts: list[dict], round_: int, config_hash: str, stop_ids: list[int],
               k: int | None = None) -> pa.Table:
        if list(stop_ids) != list(self.pool.plan.stop_ids):
            raise ValueError(f"replay: stop ids {stop_ids} differ from the pool's")
        k = k or self.k
        label = relative_to_workdir(self.pool.policy, self.workdir)
        cands = self.pool.candidates()
        rows = []
        for p in prompts:
            pid = p["prompt_id"]
            if list(p["prompt_token_ids"]) != self.tokens.get(pid):
                raise ValueError(f"replay: prompt {pid} was rendered differently in the pool")
            gid = group_id(round_, pid)
            for r in cands[pid][:k]:
                rows.append({**r, "round": round_, "group_id": gid,
                             "candidate_id": candidate_id(gid, r["candidate_idx"]),
                             "policy": label, "config_hash": config_hash})
        return pa.Table.from_pylist(rows, schema=CANDIDATES.arrow_schema)


def write_prompts(path: Path, train: list[dict], heldout: list[dict]) -> Path:
    """A prompts file of the rows as the user's file had them (``row_json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r["row_json"] for r in train + heldout]
    text = "".join(line + "\n" for line in lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


class ViewRun:
    """One view of one seed: its workdir, config and round-0 data."""

    def __init__(self, root: Path, s: Settings, pool: Pool, view: View, seed: int,
                 heldout: int, llm_judge: Path | None) -> None:
        self.root, self.s, self.pool, self.view, self.seed = root, s, pool, view, seed
        self.workdir = root / f"s{seed}" / view.name
        self.base = pool.policy
        mine = pool.seed_prompts(seed)[view.offset:view.offset + view.n * view.rounds]
        self.prompts = write_prompts(self.workdir / "prompts.jsonl", mine,
                                     pool.heldout(heldout))
        self.heldout = heldout
        self.llm_judge = llm_judge if view.llm else None
        self.cfg = self.config()

    def config(self, **extra) -> Config:
        v = self.view
        return config(self.root, self.s, prompts=self.prompts, n_train=v.n,
                      heldout=self.heldout, k=v.k, reward_models=v.reward_models,
                      llm_judge=self.llm_judge, seed=self.seed, **extra)

    def prepare(self, endpoint: SharedEndpoint | None) -> None:
        """Round 0 replayed from the pool, then judged by every configured source."""
        plan = generation.plan_round(self.workdir, self.cfg, 0, self.base)
        generate(self.workdir, self.cfg, plan, ReplaySampler(self.pool, self.workdir, self.view.k))
        judge(self.workdir, self.cfg, 0, endpoint)

    def train_arm(self, arm: Arm, round_: int = 0, policy: Path | None = None,
                  out: Path | None = None) -> Path:
        """Rank the round with the arm's weights, then train its policy (skipped when done)."""
        out = out or self.workdir / "models" / arm.name
        if (out / "config.json").exists() and \
                (out.with_name(out.name + ".checkpoints") / "result.json").exists():
            return out
        cfg = self.config(**{"rank.weights": list(arm.weights), "train.loss": arm.loss})
        inputs = rank_inputs(cfg, self.workdir, round_)
        rank_round(self.workdir, round_, cfg.rank, judgment_files=inputs.files,
                   zero_weight=[cfg.loop.gold])
        train(cfg, self.workdir, [round_], policy or self.base, self.base, out,
              show_progress=False, overwrite=True)
        return out

    def iterate(self, arm_for_round: dict[int, Arm], endpoint=None) -> dict[int, Path]:
        """The iterative view: round r is sampled by the policy trained on round r-1 (with
        vLLM, as the loop does), judged, ranked and trained; the reference stays the base."""
        policies = {}
        policy = self.base
        for r in range(self.view.rounds):
            if r > 0:
                plan = generation.plan_round(self.workdir, self.cfg, r, policy)
                generate(self.workdir, self.cfg, plan)
                judge(self.workdir, self.cfg, r, endpoint)
            out = trained_policy_dir(self.workdir, r + 1)
            policy = self.train_arm(arm_for_round[r + 1], r, policy, out)
            policies[r + 1] = policy
        return policies


def judge(workdir: Path, cfg: Config, round_: int, endpoint: SharedEndpoint | None) -> None:
    """Every configured source on every shard, through the fleet's judging jobs (what
    ``grpo judge`` runs); a source left incomplete is an error."""
    jobs = fleet_jobs.judge_jobs_for(cfg, workdir, endpoint or SharedEndpoint(cfg, workdir))
    run_claimed(fleet_jobs.judging_jobs(workdir, round_, jobs), new_owner_id(),
                cfg.generation.lease_ttl_s)
    for spec in configured_sources(cfg, workdir):
        cov = stage.coverage(workdir, round_, spec.source, spec.fingerprint)
        if cov.pending:
            raise RuntimeError(f"{workdir}: {spec.source} left {cov.pending} groups unjudged")


# --- simulated people ----------------------------------------------------------------------

def _noisy(seed: int, slot: int, group: str, text: str, noise: float) -> float:
    """An annotator's noise for one answer: the same text in the same group gets the same
    value (identical answers tie), and the same annotator slot judges a group the same way in
    every annotation set (the sets are nested, so their differences are paired)."""
    return random.Random(f"{seed}:{slot}:{group}:{text}").gauss(0.0, noise)


def fill_export(jsonl: Path, out: Path, set_name: str, gold: dict[str, float], noise: float,
                seed: int) -> dict:
    """Two simulated annotators fill in an export's JSON lines twin: ranks by the gold score
    plus Gaussian noise, equal values tie (competition ranks). Returns their agreement with
    the gold on the pairs the gold orders strictly."""
    lines, agree, pairs = [], 0, 0
    for line in jsonl.read_text().splitlines():
        g = json.loads(line)
        ids = [c["candidate_id"] for c in g["candidates"]]
        texts = [c["text"] for c in g["candidates"]]
        for slot in (1, 2):
            seen = [gold[c] + _noisy(seed, slot, g["group_id"], t, noise)
                    for c, t in zip(ids, texts, strict=True)]
            ranks = [1 + sum(o > v for o in seen) for v in seen]
            lines.append(json.dumps({"group_id": g["group_id"], "annotator": f"{set_name}-{slot}",
                                     "candidates": [{"candidate_id": c, "rank": r}
                                                    for c, r in zip(ids, ranks, strict=True)]}))
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    gi, gj = gold[ids[i]], gold[ids[j]]
                    if gi != gj:
                        pairs += 1
                        agree += ranks[i] != ranks[j] and (ranks[i] < ranks[j]) == (gi > gj)
    out.write_text("".join(x + "\n" for x in lines))
    return {"groups": len(lines) // 2, "gold_pairs": pairs, "gold_pair_agreement":
            agree / pairs if pairs else float("nan")}


def annotate(run: ViewRun, sets: dict[str, tuple[float, str]], machine_judges: list[str]
             ) -> dict:
    """Each annotation set: export (random, or where the machine judges disagree most, from a
    ranking of those judges alone, so the held-out gold never steers the choice), fill in,
    import. Random sets share one seeded order, so 10% is the start of 50%."""
    wd, cfg = run.workdir, run.cfg
    marker = wd / "annotation" / "sets.json"
    if marker.exists():
        return json.loads(marker.read_text())
    groups = len(run_groups(wd))
    gold = gold_scores(wd, 0, cfg)
    specs = [sp for sp in configured_sources(cfg, wd) if sp.source in machine_judges]
    out = {}
    for name, (share, how) in sets.items():
        n = max(1, round(share * groups))
        if how == "disagreement":
            files = [stage.judgment_path(wd, 0, sp.source, sp.fingerprint, sh)
                     for sp in specs for sh in stage.candidate_shards(wd, 0)]
            rank_round(wd, 0, cfg.rank, judgment_files=files)
        exported = export_annotation(wd, 0, max_groups=None if share >= 1 else n,
                                     selection=how, seed=1000 + run.seed, include_annotated=True)
        twin = next(Path(f) for f in exported.files if f.endswith(".jsonl"))
        filled = twin.with_name(twin.stem + f".filled-{name}.jsonl")
        quality = fill_export(twin, filled, name, gold, cfg.loop.annotator_noise, run.seed)
        report = import_human_file(wd, filled)
        if report.quarantined:
            raise RuntimeError(f"{filled}: {report.quarantined} rows quarantined: "
                               f"{report.reasons}")
        out[name] = {"selection": how, "groups": exported.groups, **quality,
                     "accepted": report.accepted}
    marker.write_text(json.dumps(out, indent=2))
    return out


def run_groups(workdir: Path) -> list[str]:
    files = sorted((workdir / "rounds" / "r000" / "candidates").glob("*.parquet"))
    return sorted(set(pq.read_table(files, columns=["group_id"]).column("group_id")
                      .to_pylist()))
