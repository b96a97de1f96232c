"""The demo judge: a tiny causal LM trained here to score groups in the listwise template,
served by vLLM's OpenAI-compatible server and asked through the real ``LLMJudge``."""

from __future__ import annotations

import json
import random
import re
from itertools import combinations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.demo_judge import (
    HELDOUT_FILE,
    REPORT_FILE,
    JudgeExample,
    _accumulate_step,
    _AuxHeads,
    _Batcher,
    _train_step,
    answer_text,
    block_end_tokens,
    constrained_greedy_scores,
    judge_prompt,
    length_buckets,
    new_judge_model,
    off_task_above_best,
    read_heldout,
    target_scores,
    train_judge_tokenizer,
    training_off_task_texts,
    with_off_task,
    write_heldout,
)
from pipeline.judge_agreement import kendall_tau, listwise_agreement, reconciled_signs
from pipeline.judging.injection import detect
from pipeline.judging.llm import score_constraint
from pipeline.judging.parsing import parse_scores
from pipeline.off_task import ATTACKS, off_task_texts
from pipeline.resolve import judge_model_dir
from tests.processes import session_processes


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_answer_is_what_the_regex_admits_and_the_parser_reads():
    q = load_config().llm_judge
    regex = score_constraint(q, 3)["structured_outputs"]["regex"]
    text = answer_text([0, 9, 4])
    assert re.fullmatch(regex, text)
    parsed = parse_scores(text, 3, q.score_low, q.score_high)
    assert parsed.ok and parsed.values == [0.0, 9.0, 4.0]


def test_targets_map_gold_onto_the_score_range():
    rng = random.Random(0)
    assert target_scores([0.0, 0.5, 1.0], 0, 9, 0.0, rng) == [0, 4, 9]
    noisy = [target_scores([0.0, 1.0], 0, 9, 3.0, rng) for _ in range(200)]
    assert all(0 <= s <= 9 for pair in noisy for s in pair)  # clipped into the range
    assert len({tuple(p) for p in noisy}) > 10  # and noisy
    # The noise is centred: on average the targets stay where the gold puts them.
    mid = [target_scores([0.5], 0, 9, 1.0, rng)[0] for _ in range(2000)]
    assert sum(mid) / len(mid) == pytest.approx(4.5, abs=0.15)


def test_kendall_tau_counts_only_pairs_both_order():
    assert kendall_tau([3, 2, 1], [1.0, 0.5, 0.0]) == 1.0
    assert kendall_tau([1, 2, 3], [1.0, 0.5, 0.0]) == -1.0
    assert kendall_tau([5, 5, 1], [1.0, 0.5, 0.0]) == 1.0  # the tie counts as neither
    assert kendall_tau([5, 5], [1.0, 0.0]) is None


def test_views_reconcile_pair_by_pair():
    # Pairs (0,1), (0,2), (1,2): the views agree on the first two only.
    assert reconciled_signs([[9, 5, 1], [9, 1, 5]]) == [1, 1, 0]
    # Candidate 0 moves from first to last: only its pairs become ties.
    assert reconciled_signs([[3, 2, 1, 0], [0, 3, 2, 1]]) == [0, 0, 0, 1, 1, 1]


def test_agreement_figures_of_two_views():
    gold = [[1.0, 0.5, 0.0]]
    same = listwise_agreement(gold, [[[9, 5, 1], [9, 5, 1]]])
    assert same["heldout_tau"] == same["heldout_tau_reconciled"] == 1.0
    assert same["tie_share"] == same["view_disagreement"] == 0.0
    # View 1 flips the pair (1, 2): one pair of three disagrees and reconciles to a tie.
    flipped = listwise_agreement(gold, [[[9, 5, 1], [9, 1, 5]]])
    assert flipped["view_disagreement"] == pytest.approx(1 / 3, abs=1e-4)
    assert flipped["heldout_tau_reconciled"] == 1.0  # the two agreed pairs are right
    assert flipped["heldout_tau"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    ties = listwise_agreement(gold, [[[5, 5, 5], [5, 5, 1]]])
    assert ties["tie_share"] == pytest.approx(4 / 6, abs=1e-4)


def _naive_agreement(gold, view_scores):
    """The same figures written the long way: explicit loops over pairs and views."""
    taus, reconciled, pairs, ties, disagree, gold_ties = [], [], 0, 0.0, 0, 0

    def cmp(a, b):
        return 1 if a > b else -1 if a < b else 0

    for g, views in zip(gold, view_scores, strict=True):
        idx = list(combinations(range(len(g)), 2))
        for s in views:
            conc = sum(1 for i, j in idx if cmp(s[i], s[j]) * cmp(g[i], g[j]) == 1)
            disc = sum(1 for i, j in idx if cmp(s[i], s[j]) * cmp(g[i], g[j]) == -1)
            if conc + disc:
                taus.append((conc - disc) / (conc + disc))
        conc = disc = 0
        for i, j in idx:
            verdicts = {cmp(s[i], s[j]) for s in views}
            common = verdicts.pop() if len(verdicts) == 1 else 0
            conc += common * cmp(g[i], g[j]) == 1
            disc += common * cmp(g[i], g[j]) == -1
            pairs += 1
            ties += sum(cmp(s[i], s[j]) == 0 for s in views) / len(views)
            disagree += len({cmp(s[i], s[j]) for s in views}) > 1
            gold_ties += g[i] == g[j]
        if conc + disc:
            reconciled.append((conc - disc) / (conc + disc))
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"heldout_tau": mean(taus), "heldout_tau_reconciled": mean(reconciled),
            "tie_share": round(ties / pairs, 4), "view_disagreement": round(disagree / pairs, 4),
            "gold_tie_share": round(gold_ties / pairs, 4)}


def test_agreement_matches_a_naive_twin_on_random_groups():
    rng = random.Random(7)
    for _ in range(50):
        groups = rng.randint(1, 6)
        gold, views = [], []
        for _ in range(groups):
            k = rng.randint(2, 8)
            gold.append([rng.choice([0.0, 0.25, 0.5, 1.0]) for _ in range(k)])
            views.append([[rng.randint(0, 4) for _ in range(k)] for _ in range(2)])
        assert listwise_agreement(gold, views) == _naive_agreement(gold, views)


def _groups(rng, n=64, k=8):
    return [["".join(rng.choice("0123456789") for _ in range(rng.randint(3, 8)))
             for _ in range(k)] for _ in range(n)]


def test_judge_tokenizer_keeps_digits_single_and_the_template_short():
    q = load_config().llm_judge
    rng = random.Random(0)
    groups = _groups(rng)
    prompts = [judge_prompt(_messages(f"S {g[0]}="), g, q) for g in groups]
    answers = [answer_text([rng.randint(0, 9) for _ in range(8)]) for _ in groups]
    tok = train_judge_tokenizer(prompts + answers, 1024)
    for d in "0123456789":
        assert tok(d, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(d)]
    # The answer tokenises piece by piece, as constrained decoding builds it.
    pieces = ['{"scores": [', "7", ", ", "0", "]}"]
    joined = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    assert tok("".join(pieces), add_special_tokens=False)["input_ids"] == joined
    # The fixed template text collapses: a k=8 prompt is mostly the candidates' digits.
    ids = tok(prompts[0])["input_ids"]
    n_digits = sum(len(t) for t in groups[0]) + len(groups[0][0])
    assert ids[0] == tok.bos_token_id
    assert len(ids) < n_digits + 8 * 4 + 16
    assert tok.decode(ids, skip_special_tokens=True) == prompts[0]


def test_block_ends_point_at_each_closing_tag():
    q = load_config().llm_judge
    rng = random.Random(1)
    groups = _groups(rng, n=16, k=4)
    prompts = [judge_prompt(_messages("S 1="), g, q) for g in groups]
    tok = train_judge_tokenizer(prompts, 600)
    enc = tok(prompts[0], return_offsets_mapping=True)
    ends = block_end_tokens(prompts[0], enc["offset_mapping"], 4)
    assert ends == sorted(ends) and len(set(ends)) == 4
    for j, t in enumerate(ends):
        # Everything up to that token includes candidate j's whole text, but not j+1's.
        seen = prompts[0][:enc["offset_mapping"][t][1]]
        assert seen.count("</candidate") == j + 1 and groups[0][j] in seen
    with pytest.raises(ValueError, match="rendered 4 </candidate> tags for 3"):
        block_end_tokens(prompts[0], enc["offset_mapping"], 3)
    # The same tokens as the definition's linear scan, on every prompt (the first token
    # whose span holds the tag's '<').
    for prompt in prompts:
        offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]
        starts = [i for i in range(len(prompt)) if prompt.startswith("</candidate>", i)]
        assert block_end_tokens(prompt, offsets, 4) == [
            next(t for t, (a, b) in enumerate(offsets) if a <= c < b) for c in starts]


def _brute_force_buckets(lengths, overhead):
    """The cheapest split of the sorted rows into contiguous runs, by trying every one."""
    from itertools import product

    ordered = sorted(lengths)
    best = None
    for cuts in product([False, True], repeat=len(ordered) - 1):
        cost, start = 0, 0
        for i, cut in enumerate([*cuts, True]):
            if cut:
                cost += (i + 1 - start) * ordered[i] + overhead
                start = i + 1
        best = cost if best is None else min(best, cost)
    return best


def test_length_buckets_split_rows_at_least_cost():
    rng = random.Random(3)
    for _ in range(200):
        lengths = [rng.choice([rng.randint(20, 40), rng.randint(60, 200)])
                   for _ in range(rng.randint(1, 9))]
        overhead = rng.choice([0, 30, 150, 10_000])
        buckets = length_buckets(lengths, overhead)
        assert sorted(r for b in buckets for r in b) == list(range(len(lengths)))
        # Runs of the rows sorted by length, in order.
        flat = [lengths[r] for b in buckets for r in b]
        assert flat == sorted(lengths)
        cost = sum(len(b) * max(lengths[r] for r in b) + overhead for b in buckets)
        assert cost == _brute_force_buckets(lengths, overhead)
    assert len(length_buckets([30] * 8 + [180] * 8, 150)) == 2  # two lengths, two buckets
    assert length_buckets([30, 180], 10_000) == [[0, 1]]  # overhead too high to split


def _tiny_judge(seed: int = 0):
    """An untrained judge with its tokenizer and a training pool whose groups mix short
    digit answers with a long off-task text, as the build's do."""
    import torch

    cfg = load_config(overrides={"demo_judge.hidden_size": 64, "demo_judge.num_heads": 2,
                                 "demo_judge.intermediate_size": 128,
                                 "demo_judge.max_k": 4, "demo_judge.batch_size": 12})
    q = cfg.llm_judge
    rng = random.Random(seed)
    groups = _groups(rng, n=24, k=6)
    off_task = [" ".join([t] * 4) for t in off_task_texts(24, seed)]  # long rows
    pool = [JudgeExample(f"g{i}", _messages(f"S {g[0]}="), g[0], g[:5] + [off_task[i]],
                         [1.0] * 6, [rng.randint(0, 9) for _ in range(6)])
            for i, g in enumerate(groups)]
    prompts = [judge_prompt(e.messages, e.texts, q) for e in pool]
    tok = train_judge_tokenizer(prompts + [answer_text(e.labels) for e in pool], 600)
    torch.manual_seed(seed)
    return cfg, new_judge_model(cfg, tok), tok, _Batcher(cfg, pool, tok, rng)


def test_length_buckets_give_the_whole_batch_gradient():
    import torch

    cfg, model, _, batcher = _tiny_judge()
    d = cfg.demo_judge
    aux = _AuxHeads(d.hidden_size, 10, d.max_k)
    params = [*model.parameters(), *aux.parameters()]
    for _ in range(3):
        batch = batcher.batch(d.batch_size)
        lengths = batch.attention_mask.sum(1).tolist()
        assert len(length_buckets(lengths)) > 1, "the batch must be split for this to test it"
        model.zero_grad(set_to_none=True)
        aux.zero_grad(set_to_none=True)
        main, aux_loss = _train_step(model, aux, batch, d.num_layers - 1)
        (main + aux_loss).backward()
        whole = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
        aux.zero_grad(set_to_none=True)
        bucketed_main = _accumulate_step(model, aux, batch, d.num_layers - 1)
        assert bucketed_main == pytest.approx(main.item(), rel=1e-5)
        for a, p in zip(whole, params, strict=True):
            torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-6)


def test_cached_scoring_picks_what_rereading_the_prompt_picks():
    from bench.demo_judge import rescored_greedy_scores

    cfg, model, tok, batcher = _tiny_judge(seed=1)
    model.eval()
    q = cfg.llm_judge
    # The last 4 texts: the long off-task one among them in some groups, not in others (cut
    # to a digit answer), so the left-padded rows differ widely in length.
    prompts = [judge_prompt(e.messages, e.texts[-4:] if i % 2 else e.texts[:4], q)
               for i, e in enumerate(batcher.pool)]
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    assert max(lengths) > 1.5 * min(lengths)
    cached = constrained_greedy_scores(model, tok, prompts, 4, 0, 9)
    assert cached == rescored_greedy_scores(model, tok, prompts, 4, 0, 9)
    assert len({tuple(s) for s in cached}) > 1, "an untrained judge still scores groups apart"
    assert all(0 <= s <= 9 for row in cached for s in row)


def test_heldout_groups_round_trip(tmp_path):
    groups = [JudgeExample("demo-judge-heldout:0", _messages("S 31="), "13", ["13", "31"],
                           [1.0, 0.0])]
    write_heldout(tmp_path / HELDOUT_FILE, groups)
    assert read_heldout(tmp_path / HELDOUT_FILE) == groups


def test_off_task_texts_are_varied_reproducible_and_leave_the_canary_unseen():
    from pipeline.tasks import get_task

    cfg = load_config()
    train = training_off_task_texts(cfg)
    assert len(train) == cfg.demo_judge.off_task_per_prompt * cfg.demo_judge.train_prompts
    assert train == training_off_task_texts(cfg)
    assert len(set(train)) > len(train) // 2
    # The integration test's canary measures generalisation: neither its opening words nor
    # its fake verdict's key are ever shown in training.
    assert not any("ignore" in t.lower() or '"scores"' in t for t in train)
    # Every attack fragment the judge learns to rate low is one the detector flags.
    assert all(detect(a) for a in ATTACKS)
    # The verifier, which labels them, gives none of them credit on real items.
    task = get_task("sort_digits")
    references = [p.reference for p in task.prompts("train", 20, seed=3)]
    assert {task.gold_score(r, t) for r in references for t in train} == {0.0}
    # Held-out texts avoid the training ones (drawn plainly, a third of them would repeat).
    held = off_task_texts(256, 70_000, exclude=frozenset(train))
    assert len(held) == 256 and not set(held) & set(train)
    assert sum(t in set(train) for t in off_task_texts(256, 70_000)) > 256 // 4


def test_off_task_swap_and_the_share_above_the_best_answer():
    g = JudgeExample("g", _messages("S 3121="), "1123", ["1123", "1213", "3211"],
                     [1.0, 0.5, 0.0])
    (swapped,) = with_off_task([g], ["Sure! Happy to help."], "sort_digits")
    assert swapped.texts == ["1123", "1213", "Sure! Happy to help."]
    assert swapped.gold == [1.0, 0.5, 0.0] and g.texts[-1] == "3211"  # a copy
    # The off-task text (last) against the verifier's best of the others (index 0): above it
    # in one view of two; a tie is not above.
    assert off_task_above_best([swapped], [[[9, 5, 1], [4, 5, 6]]]) == 0.5
    assert off_task_above_best([swapped], [[[9, 5, 9], [4, 5, 4]]]) == 0.0
    # A group whose other candidates all lack credit has no best answer to beat.
    hopeless = JudgeExample("h", _messages("S 3121="), "1123", ["9", "99", "x"], [0.0] * 3)
    assert off_task_above_best([swapped, hopeless], [[[9, 5, 1], [4, 5, 6]],
                                                     [[0, 0, 9], [0, 0, 9]]]) == 0.5


def test_demo_judge_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match="demo_judge.hidden_size: must be divisible"):
        load_config(overrides={"demo_judge.num_heads": 3})
    with pytest.raises(ConfigError, match="demo_judge.max_k: need min_k <= max_k"):
        load_config(overrides={"demo_judge.max_k": 20})
    with pytest.raises(ConfigError, match="demo_judge.num_layers"):
        load_config(overrides={"demo_judge.num_layers": 1})
    with pytest.raises(ConfigError, match=r"demo_judge.stepz: unknown key"):
        load_config(overrides={"demo_judge.stepz": 10})


def test_demo_config_serves_the_demo_judge(tmp_path):
    cfg = load_config()
    assert cfg.llm_judge.base_url == "embedded" and cfg.llm_judge.model == "demo"
    with pytest.raises(ConfigError, match="llm_judge.model: no model at .*models/demo-judge"):
        judge_model_dir(cfg, tmp_path)
    (tmp_path / "models" / "demo-judge").mkdir(parents=True)
    (tmp_path / "models" / "demo-judge" / "config.json").write_text("{}")
    assert judge_model_dir(cfg, tmp_path) == tmp_path / "models" / "demo-judge"


@pytest.mark.slow
def test_demo_judge_served_by_vllm_scores_informatively(demo_judge_dir, demo_judge_url):
    from pipeline.demo_judge_served import heldout_groups, served_agreement
    from pipeline.judging.sources import connect_llm_judge

    report = json.loads((demo_judge_dir / REPORT_FILE).read_text())
    assert report["heldout_groups"] == 32 and report["parameters"] > 0
    # Trained among off-task texts, it rates a held-out one above a group's best answer
    # rarely (in no view in each of 3 builds, seeds 0-2; trained without them: 0.078-0.203).
    assert report["off_task_above_best"] <= 0.05, report
    # The saved directory is a plain causal LM with its tokenizer: what vLLM loaded.
    saved = json.loads((demo_judge_dir / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"]
    cfg = load_config(overrides={"llm_judge.concurrency": 4})
    assert cfg.llm_judge.structured == "regex" and cfg.llm_judge.api == "completions"
    url, model = demo_judge_url
    groups, gold = heldout_groups(demo_judge_dir)
    figures = served_agreement(connect_llm_judge(cfg, url, model), groups, gold)
    print(f"small demo judge via vLLM: {figures}; in transformers: {report}")
    # Every answer parsed; scores differ within groups and follow the verifier more often
    # than not; the two presentation orders disagree on some pairs (position consistency is
    # measurable) without disagreeing on most.
    assert figures["failed_items"] == 0 and figures["groups"] == len(groups) == 32
    assert figures["tie_share"] < 0.9, figures
    assert figures["heldout_tau"] > 0.1, figures
    assert 0.0 < figures["view_disagreement"] < 0.7, figures


@pytest.mark.slow
def test_the_embedded_server_runs_its_model_in_the_engine_process(demo_judge_server):
    # On a CPU the model worker lives in the engine core: no third process importing torch
    # and vLLM afresh at every start (pipeline.judging.server.single_process_engine).
    processes = session_processes(demo_judge_server.pid)
    assert any(p.startswith("VLLM::EngineCore") for p in processes), processes
    assert not any(p.startswith("VLLM::Worker") for p in processes), processes
