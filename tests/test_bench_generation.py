"""bench/generation.py end to end in its quick mode, so that a schema or API change cannot
silently break the benchmark; and its token count, which every contender shares."""

from __future__ import annotations

import pytest

from tests.bench_helpers import run_benchmark


def test_generated_tokens_count_up_to_and_including_the_first_stop_id():
    import torch

    from bench.generation import count_until_stop

    pad = 0
    rows = torch.tensor([[5, 6, 7, 8],      # never stopped: 4
                         [5, 2, pad, pad],  # stopped by stop id 2 at the second token: 2
                         [9, pad, pad, 3],  # stop id 9 first: 1 (a later stop id is padding)
                         [3, 3, pad, pad]])  # stop id 3: 1
    assert count_until_stop(rows, [2, 3, 9]) == 4 + 2 + 1 + 1


def test_interleaved_repetitions_rotate_the_order():
    from bench._common import interleaved

    order = []
    runs = interleaved({n: (lambda n=n: order.append(n) or {"n": n}) for n in "abc"}, 3)
    assert order == list("abc" "bca" "cab")
    assert {n: len(r) for n, r in runs.items()} == {"a": 3, "b": 3, "c": 3}


@pytest.mark.slow
def test_quick_mode_runs_end_to_end_and_ends_with_one_json_line(tmp_path):
    # As a script (the harder way to import the project); `-m bench.generation` is make's.
    record, _ = run_benchmark("generation", "--quick", "--sweep", "--workdir",
                              str(tmp_path / "bench"), tmp_path=tmp_path, timeout=600)
    assert record["quick"] is True
    n, k, max_new = record["prompts"], record["k"], record["max_new_tokens"]
    # Both HF dtypes were tried; one that lost by over 2x in the selection pass is left out
    # of the repetitions (and named), the rest are timed in each.
    assert {s["dtype"] for s in record["hf_selection"]} == {"float32", "bfloat16"}
    timed = [f"hf_{d}" for d in ("float32", "bfloat16") if d not in record["hf_left_out"]]
    assert f"hf_{record['hf_best']}" in timed
    assert {name for name in record["tokens"] if name.startswith("hf_")} == set(timed)
    for name in ("pipeline", "bare_vllm", *timed):
        assert 0 < record["tokens"][name] <= n * k * max_new
        stat = record["tokens_per_s"][name]
        assert stat["n"] == record["reps"] and 0 < stat["min"] <= stat["median"] <= stat["max"]
    # The pipeline sent exactly what a bare call sends: same prompt ids, seeds and stop ids
    # give the same samples (one shard here, so the same batch as well).
    assert record["samples_identical_to_bare_vllm"] == 1.0
    assert record["tokens"]["pipeline"] == record["tokens"]["bare_vllm"]
    assert record["pipeline_over_bare_vllm"]["median"] > 0
    assert record["engine_startup_s"] > 0
    [setting] = record["sweep"]
    assert "error" not in setting, setting
    assert setting["over_default"]["n"] == record["reps"]
