"""The embedded default's LLM judge: a tiny causal LM that reads a group in the listwise judge
template and writes ``{"scores": [...]}``, imperfect on purpose.

It is trained here on groups the demo policy samples (prompts from seed streams disjoint from
the pipeline's), shown in random sizes and orders, with targets that are the gold verifier's
partial credit mapped onto the judge's score range plus Gaussian noise drawn once per sample.
Among each prompt's samples are a few off-task texts (``pipeline.off_task``: prose, refusals,
prompt injections), labelled by the same verifier, so that a text that is no answer at all
is rated low rather than at random. Its Kendall tau with the verifier on held-out groups,
each judged in the two views the pipeline shows, and how often a held-out off-task text
beats a group's best answer, go to ``demo_judge_report.json`` beside the weights; the
held-out groups go to ``demo_judge_heldout.jsonl`` so that the same groups can be measured
again through vLLM's server (``pipeline.demo_judge_served``).

The judge has its own tokenizer: BPE trained on rendered judge prompts with no word
splitting, so the fixed template text collapses into a few tokens (a k=8 prompt is ~100
tokens). Digits stay single tokens, so under vLLM's regex constraint (``llm.score_constraint``)
every score is one decoding step among the allowed digits, exactly what
``constrained_greedy_scores`` does here with transformers. The saved directory is a plain
``LlamaForCausalLM`` with its tokenizer: vLLM serves it like any user's model.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.atomic import atomic_dir
from pipeline.config import Config, LLMJudgeConfig
from pipeline.demo_model import BOS, EOS, PAD, left_padded, stop_ids
from pipeline.judge_agreement import listwise_agreement
from pipeline.judging.prompts import listwise_prompt
from pipeline.judging.views import to_canonical, views_for
from pipeline.off_task import off_task_texts
from pipeline.progress import progress_bar
from pipeline.tasks import TaskPrompt, get_task

REPORT_FILE = "demo_judge_report.json"
HELDOUT_FILE = "demo_judge_heldout.jsonl"
MAX_POSITIONS = 1024  # ~100 tokens per k=8 prompt: room for k=64 groups of short answers


@dataclass
class DemoJudgeReport:
    path: str
    train_groups_seen: int
    heldout_groups: int
    steps: int
    seconds: float
    parameters: int
    prompt_tokens_max_k: float  # mean prompt length of a held-out group of max_k
    heldout_tau: float | None  # mean Kendall tau with the gold verifier, per group and view
    heldout_tau_reconciled: float | None  # the same after views that disagree became ties
    tie_share: float  # candidate pairs given equal scores within one view
    view_disagreement: float  # candidate pairs whose verdict differs between the two views
    gold_tie_share: float  # candidate pairs the verifier itself scores equal
    # held-out groups with their last candidate swapped for an off-task text not among
    # training's: views in which it scores above the group's best answer (by the verifier;
    # groups where no other candidate has any credit are left out)
    off_task_above_best: float
    settings: dict  # the [demo_judge] section it was built with


def conversation(prompt: TaskPrompt) -> list[dict]:
    """A task prompt as the pipeline's prompts file has it: one user turn."""
    return [{"role": "user", "content": prompt.prompt}]


def judge_prompt(messages: list[dict], shown_texts: list[str], q: LLMJudgeConfig) -> str:
    """The listwise prompt, rendered as ``LLMJudge`` renders it: every prompt the judge is
    trained or measured on goes through here, so a changed template is one edit."""
    return listwise_prompt(messages, shown_texts, q.score_low, q.score_high)


def answer_text(scores: list[int]) -> str:
    """The answer ``llm.score_constraint``'s regex admits and ``parse_scores`` reads."""
    return '{"scores": [' + ", ".join(str(s) for s in scores) + "]}"


def target_scores(gold: list[float], low: int, high: int, noise: float,
                  rng: random.Random) -> list[int]:
    """Gold partial credit in [0, 1] mapped onto [low, high], plus N(0, noise), rounded."""
    return [min(high, max(low, round(low + (high - low) * g + rng.gauss(0.0, noise))))
            for g in gold]


def train_judge_tokenizer(corpus: list[str], vocab_size: int):
    """Byte-level BPE without word splitting (so template phrases merge into single tokens),
    every digit its own token, BOS added on encode."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, padding_side="left",
                                   model_max_length=MAX_POSITIONS)


@torch.no_grad()
def sample_candidates(policy, tokenizer, prompts: list[TaskPrompt], n: int,
                      max_new_tokens: int, seed: int) -> list[list[str]]:
    """n samples per prompt from the policy at temperature 1, through its chat template and
    stop ids, as the pipeline samples."""
    torch.manual_seed(seed)
    out: list[list[str]] = []
    for i in range(0, len(prompts), 64):
        enc = left_padded(tokenizer, [p.prompt for p in prompts[i:i + 64]])
        ids = policy.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, num_return_sequences=n,
                              pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=stop_ids(tokenizer))
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        out += [texts[j:j + n] for j in range(0, len(texts), n)]
    return out


@dataclass
class JudgeExample:
    """A prompt with samples and their gold scores (and, for training, noisy labels)."""

    group_id: str
    messages: list[dict]
    reference: str
    texts: list[str]
    gold: list[float]
    labels: list[int] | None = None  # training only: noisy target scores, drawn once


@dataclass
class _Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T]
    slots: torch.Tensor  # [B, k] positions whose next token is score j
    scores: torch.Tensor  # [B, k] token ids of the target scores
    block_ends: torch.Tensor  # [B, k] positions of the token closing candidate block j
    classes: torch.Tensor  # [B, k] target scores as classes 0..high-low


class _Batcher:
    """Training groups drawn from each prompt's samples: one random size per batch, random
    subsets and orders."""

    def __init__(self, cfg: Config, pool: list[JudgeExample], tokenizer,
                 rng: random.Random) -> None:
        self.cfg, self.pool, self.tok, self.rng = cfg, pool, tokenizer, rng
        self.digit_ids = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}

    def batch(self, size: int) -> _Batch:
        d, q = self.cfg.demo_judge, self.cfg.llm_judge
        k = self.rng.randint(d.min_k, d.max_k)
        rows = []
        for _ in range(size):
            g = self.rng.choice(self.pool)
            picked = self.rng.sample(range(len(g.texts)), k)
            prompt = judge_prompt(g.messages, [g.texts[c] for c in picked], q)
            rows.append((prompt, [g.labels[c] for c in picked]))
        return self._encode(rows, int(q.score_low))

    def _encode(self, rows, low: int) -> _Batch:
        tok = self.tok
        prompts = [prompt for prompt, _ in rows]
        # One call per batch: the Rust tokenizer encodes the rows together.
        enc = tok(prompts, return_offsets_mapping=True)
        answers = tok([answer_text(targets) for _, targets in rows],
                      add_special_tokens=False)["input_ids"]
        seqs, slots, scores, ends, classes = [], [], [], [], []
        for i, (prompt, targets) in enumerate(rows):
            ids, answer = enc["input_ids"][i], answers[i]
            digit_at = [j for j, t in enumerate(answer) if t in self.digit_ids]
            n = len(ids)
            seqs.append(ids + answer + [tok.eos_token_id])
            slots.append([n + j - 1 for j in digit_at])
            scores.append([answer[j] for j in digit_at])
            ends.append(block_end_tokens(prompt, enc["offset_mapping"][i], len(targets)))
            classes.append([t - low for t in targets])
        width = max(map(len, seqs))
        pad = tok.pad_token_id
        return _Batch(torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
                      torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
                      torch.tensor(slots), torch.tensor(scores), torch.tensor(ends),
                      torch.tensor(classes))


def block_end_tokens(prompt: str, offsets: list[tuple[int, int]], k: int) -> list[int]:
    """Index of the token holding the start of each ``</candidate>``: the first position
    that has seen the whole candidate (candidate texts are escaped, so the tag is never
    inside one)."""
    starts = [m.start() for m in re.finditer("</candidate>", prompt)]
    if len(starts) != k:
        raise ValueError(f"the listwise template rendered {len(starts)} </candidate> tags "
                         f"for {k} candidates; the demo judge reads one block per candidate")
    # Offsets ascend; a token's span [a, b) holds c when it is the last token starting at or
    # before c (special tokens have empty spans and are skipped by the a <= c < b check).
    token_ends = [b for _, b in offsets]
    out = []
    for c in starts:
        t = bisect.bisect_right(token_ends, c)
        while not offsets[t][0] <= c < offsets[t][1]:
            t += 1
        out.append(t)
    return out


class _AuxHeads(torch.nn.Module):
    """Training-only heads on an inner layer, dropped when the judge is saved: each block
    end learns its candidate's score and index, each answer slot the index it scores, so
    the last layer has only to match a slot to its block."""

    def __init__(self, hidden: int, n_scores: int, max_k: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.score = torch.nn.Linear(hidden, n_scores)
        self.index = torch.nn.Linear(hidden, max_k)

    def loss(self, inner: torch.Tensor, b: _Batch) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy
        h = self.norm(inner)
        ends, slots = _gather(h, b.block_ends), _gather(h, b.slots)
        index = torch.arange(b.slots.shape[1]).expand_as(b.slots)
        return (ce(self.score(ends).flatten(0, 1), b.classes.flatten())
                + ce(self.index(ends).flatten(0, 1), index.flatten())
                + ce(self.index(slots).flatten(0, 1), index.flatten()))


def _gather(h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """h [B, T, H], positions [B, k] -> [B, k, H]."""
    return h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))


def _train_step(model, aux: _AuxHeads, b: _Batch, aux_layer: int):
    out = model.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                      output_hidden_states=True)
    logits = model.lm_head(_gather(out.last_hidden_state, b.slots))
    main = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b.scores.flatten())
    return main, aux.loss(out.hidden_states[aux_layer], b)


# A micro-batch costs about as much as this many padded tokens on top of its tokens (kernel
# launches and the step's fixed work; fitted to step times of the default judge on 2 cores).
MICRO_BATCH_OVERHEAD_TOKENS = 150


def length_buckets(lengths: list[int], overhead: int = MICRO_BATCH_OVERHEAD_TOKENS,
                   ) -> list[list[int]]:
    """Rows split into micro-batches of similar length, sorted, so that few padded tokens
    are computed: the split minimising sum(rows x longest row) + overhead per micro-batch.
    An off-task text among a group's candidates makes its row much longer than the
    others: a third or more of a padded batch was padding (bench/demo_judge.py)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    cost, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = cost[i] + (j - i) * lengths[order[j - 1]] + overhead
            if c < cost[j]:
                cost[j], cut[j] = c, i
    buckets, j = [], n
    while j:
        buckets.append(order[cut[j]:j])
        j = cut[j]
    return buckets[::-1]


def _rows(b: _Batch, rows: list[int]) -> _Batch:
    idx = torch.tensor(rows)
    width = int(b.attention_mask[idx].sum(1).max())  # right-padded: trim the common tail
    return _Batch(b.input_ids[idx, :width], b.attention_mask[idx, :width], b.slots[idx],
                  b.scores[idx], b.block_ends[idx], b.classes[idx])


def _accumulate_step(model, aux: _AuxHeads, b: _Batch, aux_layer: int) -> float:
    """Backward over the batch in length buckets, each loss weighted by its share of rows:
    every row has the same number of score slots, so the summed gradient is the whole
    batch's mean-loss gradient. Returns the batch's main loss."""
    lengths = b.attention_mask.sum(1).tolist()
    main_loss = 0.0
    for rows in length_buckets(lengths):
        weight = len(rows) / len(lengths)
        main, aux_loss = _train_step(model, aux, _rows(b, rows), aux_layer)
        ((main + aux_loss) * weight).backward()
        main_loss += main.item() * weight
    return main_loss


@torch.no_grad()
def constrained_greedy_scores(model, tokenizer, prompts: list[str], k: int, low: int,
                              high: int) -> list[list[int]]:
    """Greedy scores under the listwise regex: the answer's fixed text is forced and each
    score is the most likely allowed digit, as vLLM's constrained decoding picks them.
    The prompts are read once; each later step feeds only the chosen digit and the
    separator against the cached keys and values (every row gets as many tokens, so the
    left-padded rows stay aligned)."""
    digit_ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(low, high + 1)]
    sep = tokenizer(", ", add_special_tokens=False)["input_ids"]
    head = tokenizer('{"scores": [', add_special_tokens=False)["input_ids"]
    seqs = [tokenizer(p)["input_ids"] + head for p in prompts]
    width, pad = max(map(len, seqs)), tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    attn = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    allowed = torch.tensor(digit_ids)
    scores = torch.empty(len(prompts), k, dtype=torch.long)
    past = None
    for j in range(k):
        out = model(input_ids=input_ids, attention_mask=attn, past_key_values=past,
                    use_cache=True)
        past = out.past_key_values
        scores[:, j] = out.logits[:, -1, allowed].argmax(-1)
        if j < k - 1:
            input_ids = torch.cat([allowed[scores[:, j]].unsqueeze(1),
                                   torch.tensor(sep).expand(len(prompts), -1)], dim=1)
            attn = torch.cat([attn, torch.ones_like(input_ids)], dim=1)
    return (scores + low).tolist()


def judge_views(model, tokenizer, cfg: Config,
                groups: list[JudgeExample]) -> tuple[list[list[list[int]]], float]:
    """Each group's scores in canonical order, per view ``LLMJudge`` shows for its id (same
    orders as the served measurement), and the mean prompt length in tokens."""
    q = cfg.llm_judge
    perms = [views_for(g.group_id, len(g.texts), 2, cfg.generation.seed) for g in groups]
    prompts = [judge_prompt(g.messages, [g.texts[c] for c in perm], q)
               for g, views in zip(groups, perms, strict=True) for perm in views]
    k = len(groups[0].texts)
    shown_scores = []
    for i in range(0, len(prompts), 64):
        shown_scores += constrained_greedy_scores(model, tokenizer, prompts[i:i + 64], k,
                                                  int(q.score_low), int(q.score_high))
    view_scores = [[to_canonical(perm, shown_scores[2 * g + v]) for v, perm in enumerate(views)]
                   for g, views in enumerate(perms)]
    tokens = sum(len(tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
    return view_scores, tokens


def with_off_task(groups: list[JudgeExample], texts: list[str],
                  task_name: str) -> list[JudgeExample]:
    """Copies of the groups with the last candidate replaced by an off-task text, its gold
    from the task's verifier."""
    task = get_task(task_name)
    return [JudgeExample(g.group_id, g.messages, g.reference, g.texts[:-1] + [t],
                         g.gold[:-1] + [task.gold_score(g.reference, t)])
            for g, t in zip(groups, texts, strict=True)]


def off_task_above_best(groups: list[JudgeExample], view_scores: list[list[list[int]]]) -> float:
    """Share of views in which the last candidate (the off-task text) scores strictly above
    the candidate the verifier puts first among the others; a group where none of the others
    has any credit has no best answer and is left out."""
    wins = views = 0
    for g, per_view in zip(groups, view_scores, strict=True):
        best = max(range(len(g.texts) - 1), key=lambda c: g.gold[c])
        if g.gold[best] <= 0:
            continue
        for scores in per_view:
            views += 1
            wins += scores[-1] > scores[best]
    return round(wins / max(views, 1), 4)


def evaluate_judge(model, tokenizer, cfg: Config, groups: list[JudgeExample]) -> dict:
    """Tau with the verifier, ties and view disagreement over the two views of each held-out
    group; then the same groups with one candidate swapped for an off-task text that is not
    among the training ones."""
    view_scores, tokens = judge_views(model, tokenizer, cfg, groups)
    unseen = off_task_texts(len(groups), cfg.demo_judge.seed + 70_000,
                            exclude=frozenset(training_off_task_texts(cfg)))
    swapped = with_off_task(groups, unseen, cfg.demo_model.task)
    return {"prompt_tokens_max_k": round(tokens, 1),
            **listwise_agreement([g.gold for g in groups], view_scores),
            "off_task_above_best": off_task_above_best(
                swapped, judge_views(model, tokenizer, cfg, swapped)[0])}


def training_off_task_texts(cfg: Config) -> list[str]:
    d = cfg.demo_judge
    return off_task_texts(d.off_task_per_prompt * d.train_prompts, d.seed + 60_000)


def judge_data(cfg: Config, policy_dir: Path) -> tuple[_Batcher, list[JudgeExample]]:
    """The training groups' source (the policy's samples with their noisy labels) with the
    judge's tokenizer trained on rendered prompts and answers, and the held-out groups."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, q = cfg.demo_judge, cfg.llm_judge
    task = get_task(cfg.demo_model.task)
    rng = random.Random(d.seed)
    # Seeds disjoint from the pipeline's prompt streams, the policy's SFT data (+10_000) and
    # the demo reward model's (+20_000, +30_000).
    train = task.prompts("train", d.train_prompts, seed=d.seed + 40_000)
    heldout = task.prompts("heldout", d.heldout_groups, seed=d.seed + 50_000)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    max_tokens = cfg.generation.max_new_tokens
    low, high = int(q.score_low), int(q.score_high)

    def examples(prompts, n, seed, split):
        samples = sample_candidates(policy, tokenizer, prompts, n, max_tokens, seed)
        return [JudgeExample(f"demo-judge-{split}:{i}", conversation(p), p.reference, texts,
                             [task.gold_score(p.reference, c) for c in texts])
                for i, (p, texts) in enumerate(zip(prompts, samples, strict=True))]

    pool = examples(train, d.samples_per_prompt, d.seed, "train")
    # Off-task texts go after the samples: the tokenizer's corpus below renders the first
    # max_k of each prompt, so the vocabulary stays the task's.
    off_task = iter(training_off_task_texts(cfg))
    for g in pool:
        extra = [next(off_task) for _ in range(d.off_task_per_prompt)]
        g.texts += extra
        g.gold += [task.gold_score(g.reference, t) for t in extra]
        # Each sample's label is drawn once, like an annotator's: a model that fits the
        # labels learns some of their noise, so it is confidently wrong on some unseen
        # candidates rather than merely unsure.
        g.labels = target_scores(g.gold, low, high, d.label_noise, rng)
    held = examples(heldout, d.max_k, d.seed + 1, "heldout")
    corpus = []
    for g in pool[:512]:
        corpus.append(judge_prompt(g.messages, g.texts[:d.max_k], q))
        corpus.append(answer_text(g.labels[:d.max_k]))
    return _Batcher(cfg, pool, train_judge_tokenizer(corpus, d.vocab_size), rng), held


def new_judge_model(cfg: Config, tokenizer):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    d = cfg.demo_judge
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d.hidden_size,
        intermediate_size=d.intermediate_size, num_hidden_layers=d.num_layers,
        num_attention_heads=d.num_heads, num_key_value_heads=d.num_heads,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return model


def train_judge(cfg: Config, model, batcher: _Batcher, show_progress: bool = True) -> None:
    d, q = cfg.demo_judge, cfg.llm_judge
    aux = _AuxHeads(d.hidden_size, int(q.score_high - q.score_low) + 1, d.max_k)
    params = list(model.parameters()) + list(aux.parameters())
    optim = torch.optim.AdamW(params, lr=d.learning_rate, weight_decay=0.0)
    warmup = max(1, d.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 1 - s / d.steps))
    model.train()
    with progress_bar(show_progress) as bar:
        job = bar.add_task("training demo judge", total=d.steps)
        for _ in range(d.steps):
            optim.zero_grad(set_to_none=True)
            main = _accumulate_step(model, aux, batcher.batch(d.batch_size), d.num_layers - 1)
            optim.step()
            sched.step()
            bar.update(job, advance=1, description=f"training demo judge loss={main:.3f}")
    model.eval()


def write_heldout(path: Path, groups: list[JudgeExample]) -> None:
    path.write_text("".join(json.dumps({"group_id": g.group_id, "messages": g.messages,
                                        "reference": g.reference, "texts": g.texts,
                                        "gold": g.gold}) + "\n" for g in groups))


def read_heldout(path: Path) -> list[JudgeExample]:
    return [JudgeExample(**json.loads(line)) for line in path.read_text().splitlines() if line]


def build_demo_judge(cfg: Config, policy_dir: Path, out_dir: Path,
                     show_progress: bool = True) -> DemoJudgeReport:
    d = cfg.demo_judge
    started = time.perf_counter()
    torch.manual_seed(d.seed)
    torch.set_num_threads(d.threads)
    batcher, held = judge_data(cfg, policy_dir)
    model = new_judge_model(cfg, batcher.tok)
    train_judge(cfg, model, batcher, show_progress)
    figures = evaluate_judge(model, batcher.tok, cfg, held)
    report = DemoJudgeReport(
        path=str(out_dir), train_groups_seen=d.steps * d.batch_size, heldout_groups=len(held),
        steps=d.steps, seconds=round(time.perf_counter() - started, 1),
        parameters=sum(p.numel() for p in model.parameters()), settings=d.model_dump(),
        **figures)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        batcher.tok.save_pretrained(tmp)
        write_heldout(tmp / HELDOUT_FILE, held)
        (tmp / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2))
    return report
