"""Benchmark: vLLM `n=k` vs Hugging Face `generate(num_return_sequences=k)`, same prompts.

Both sample k candidates for the same prompts from the same demo policy on this machine,
one after the other in one run; each gets a warm-up call first. Generated tokens are counted
up to and including EOS. The last line printed is one JSON object.

    .venv/bin/python -m bench.generation [--prompts 64] [--k 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.demo_model import build_demo_model
from pipeline.generation import VLLMGroupSampler, round_prompts


def hf_tokens_per_second(model_dir: Path, prompts: list[str], k: int, max_new: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = tok(prompts, return_tensors="pt", padding=True)

    def run(batch):
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0,
                                 max_new_tokens=max_new, num_return_sequences=k,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        # Count up to and including the first EOS; everything after is padding.
        is_eos = new == tok.eos_token_id
        first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1,
                            torch.full((new.shape[0],), new.shape[1]))
        return int(first.sum())

    run({key: v[:2] for key, v in enc.items()})  # warm-up
    start = time.perf_counter()
    tokens = run(enc)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1)}


def vllm_tokens_per_second(model_dir: Path, cfg, prompts) -> dict:
    sampler = VLLMGroupSampler(model_dir, cfg)
    sampler.sample(prompts[:2], 0, "warmup")
    start = time.perf_counter()
    table = sampler.sample(prompts, 0, "bench")
    seconds = time.perf_counter() - start
    sampler.close()
    tokens = sum(table.column("n_tokens").to_pylist())
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "engine_startup_s": round(sampler.startup_seconds, 1)}


def scaled_copy(model_dir: Path, out: Path, hidden: int, layers: int) -> Path:
    """The demo architecture and tokenizer at a size where compute, not per-step overhead,
    dominates (random weights: every sequence runs to max_new_tokens on both sides)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    cfg = LlamaConfig.from_pretrained(model_dir)
    cfg.hidden_size, cfg.num_hidden_layers = hidden, layers
    cfg.intermediate_size, cfg.num_attention_heads = hidden * 4, hidden // 64
    cfg.num_key_value_heads = hidden // 64
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def measure(model_dir: Path, cfg, prompts, k: int, max_new: int) -> dict:
    vllm = vllm_tokens_per_second(model_dir, cfg, prompts)
    hf = hf_tokens_per_second(model_dir, [p.prompt for p in prompts], k, max_new)
    params = json.loads((model_dir / "config.json").read_text())
    return {"hidden_size": params["hidden_size"], "layers": params["num_hidden_layers"],
            "vllm": vllm, "hf": hf,
            "vllm_over_hf": round(vllm["tokens_per_s"] / hf["tokens_per_s"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--scaled-hidden", type=int, default=768)
    ap.add_argument("--scaled-layers", type=int, default=12)
    args = ap.parse_args()
    cfg = load_config(overrides={"generation.k": args.k,
                                 "generation.max_new_tokens": args.max_new_tokens})
    model_dir = cfg.policy_path(Path(args.workdir))
    if not (model_dir / "config.json").exists():
        build_demo_model(cfg, model_dir, show_progress=False)
    train, _ = round_prompts(cfg, 0)
    prompts = train[: args.prompts]

    demo = measure(model_dir, cfg, prompts, args.k, args.max_new_tokens)
    big_dir = scaled_copy(model_dir, Path(args.workdir) / "models" / "scaled-policy",
                          args.scaled_hidden, args.scaled_layers)
    scaled = measure(big_dir, cfg, prompts, args.k, args.max_new_tokens)
    result = {
        "benchmark": "generation", "prompts": len(prompts), "k": args.k,
        "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
        "demo_model": demo, "scaled_model": scaled,
        "vllm_over_hf_demo": demo["vllm_over_hf"],
        "vllm_over_hf_scaled": scaled["vllm_over_hf"],
        "goal_vllm_over_hf": 3.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
