"""The ranked-group dataset: every table's columns, written down once and checked at every
read and write.

A *group* is the k candidates one policy sampled for one prompt in one round. Its id is
``r{round:03d}:{prompt_id}`` and candidate ids are ``{group_id}:{candidate_idx}``, so ids
read well in SQL and are stable across reruns. Judging adds ``judgments``, ranking adds
``rankings`` and ``groups``, imports add ``quarantine``, evaluation adds ``evals``; every
stage writes Parquet that ``validate`` accepts, and the DuckDB catalog only ever views it.
``grpo schema`` prints this module's tables; the README carries the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # unique within a file, and across the dataset

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def empty(self) -> pa.Table:
        return self.arrow_schema.empty_table()


class SchemaError(ValueError):
    """Data does not match the written-down schema; the message names table and column."""


def _c(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> Column:
    return Column(name, type_, doc, nullable)


ROUND = _c("round", pa.int32(), "loop round, 0 = the base policy")
GROUP_ID = _c("group_id", pa.string(), "r{round:03d}:{prompt_id}")
CANDIDATE_ID = _c("candidate_id", pa.string(), "{group_id}:{candidate_idx}")

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_PROMPT_COLUMNS = (
    _c("prompt_id", pa.string(), "stable id: prompts.id_column, or a hash of the content"),
    _c("split", pa.string(), "train (generated for) or heldout (evaluation only)"),
    _c("messages", MESSAGES, "the conversation, system prompt included; the last turn is the "
                             "user's"),
    _c("prompt", pa.string(), "text of the last user turn (for reading; judges see every turn)"),
    _c("prompt_token_ids", pa.list_(pa.int32()),
       "the prompt as the policy saw it: chat template and generation prompt applied; "
       "generation, training and evaluation all use exactly these ids"),
    _c("reference", pa.string(), "prompts.reference_column: what a verifier compares against",
       True),
    _c("row_json", pa.string(), "the whole input row as JSON (verifiers may read any column)"),
)

PROMPT_SET = Table(
    "prompt_set", "Every accepted row of the prompts dataset, checked and rendered once "
    "(WORKDIR/prompts/set-FP.parquet; not a catalog table).",
    _PROMPT_COLUMNS, key=("prompt_id",),
)

PROMPTS = Table(
    "prompts", "The prompts of a round: its train draw and the fixed held-out sample.",
    (ROUND, *_PROMPT_COLUMNS),
    key=("round", "prompt_id"),
)

CANDIDATES = Table(
    "candidates", "The k sampled completions of every group.",
    (
        ROUND, GROUP_ID,
        _c("prompt_id", pa.string(), "prompt this group answers"),
        _c("candidate_idx", pa.int32(), "0..k-1, the order vLLM returned them"),
        CANDIDATE_ID,
        _c("text", pa.string(), "the completion, special tokens removed"),
        _c("token_ids", pa.list_(pa.int32()),
           "the completion's tokens as sampled, the stop token excluded; training scores "
           "exactly these (plus stop_token_id)"),
        _c("policy", pa.string(), "model directory that sampled it (relative to the workdir "
           "when inside it)"),
        _c("n_tokens", pa.int32(), "len(token_ids)"),
        _c("finish_reason", pa.string(), "stop (a stop token or string) or length (truncated)"),
        _c("stop_token_id", pa.int32(), "the stop token that ended it (one of the model's "
           "eos ids); null when truncated", True),
        _c("logprob", pa.float64(), "policy log-probability of the completion (raw logits)",
           True),
        _c("seed", pa.int64(), "sampling seed of the group"),
        _c("injection", pa.string(),
           "what the prompt-injection detector matched in the text, null when clean", True),
        _c("config_hash", pa.string(), "identity of the round's samples: model content, "
           "sampling settings and prompts"),
    ),
    key=("candidate_id",),
)

JUDGMENTS = Table(
    "judgments",
    "One row per (candidate, source, view[, opponent]): a score, a rank, a pairwise verdict, "
    "or a failure.",
    (
        ROUND, GROUP_ID, CANDIDATE_ID,
        _c("source", pa.string(), "verifier:TASK, rm:NAME, rm-ensemble:HOW or llm:NAME"),
        _c("kind", pa.string(), "score (higher is better), rank (1 = best, humans), or "
           "pairwise (1 win, 0 loss, 0.5 tie)"),
        _c("view", pa.int32(), "which presentation order of the group (0, 1, ...); 0 for "
           "sources that see no order; -1 = reconciled across views (disagreement = tie)"),
        _c("opponent_id", pa.string(), "pairwise: the candidate compared against", True),
        _c("value", pa.float64(), "the score or verdict; null when status is failed", True),
        _c("status", pa.string(), "scored or failed"),
        _c("error", pa.string(), "why it failed (parse error, HTTP status, timeout)", True),
        _c("raw", pa.string(), "raw judge output, kept for audit", True),
        _c("order_shown", pa.int32(), "0-based position the candidate was shown at", True),
    ),
    key=("candidate_id", "source", "view", "opponent_id"),
)

RANKINGS = Table(
    "rankings", "The consensus ranking of each group: rank 0 is best, equal ranks are ties.",
    (
        ROUND, GROUP_ID, CANDIDATE_ID,
        _c("rank", pa.int32(), "0 = best; -1 = excluded (no usable judgment)"),
        _c("score", pa.float64(), "consensus strength (log scale)", True),
    ),
    key=("candidate_id",),
)

GROUPS = Table(
    "groups", "Per-group status after merging every source.",
    (
        ROUND, GROUP_ID,
        _c("status", pa.string(), "ok, contested, intransitive or unranked"),
        _c("n_sources", pa.int32(), "sources with an opinion on the group (any weight)"),
        _c("n_cycles", pa.int32(), "3-cycles in the weighted majority graph of the consensus"),
        _c("n_source_cycles", pa.int32(), "sources whose own verdicts on the group hold a cycle"),
        _c("agreement", pa.float64(),
           "mean Kendall tau between the weighted sources; null with fewer than two", True),
        _c("weight", pa.float64(), "training weight the status policy assigns"),
    ),
    key=("group_id",),
)

CYCLES = Table(
    "cycles", "Intransitivity: candidates on a preference cycle, per source and for the "
    "consensus (source = 'consensus', the weighted majority graph).",
    (
        ROUND, GROUP_ID,
        _c("source", pa.string(), "a judgment source, or consensus"),
        _c("members", pa.list_(pa.string()), "candidate ids that lie on some cycle"),
        _c("n_3cycles", pa.int32(), "directed triangles A>B, B>C, C>A"),
    ),
    key=("group_id", "source"),
)

AGREEMENT = Table(
    "agreement", "Kendall tau between two sources on one group, over the candidate pairs both "
    "have an opinion on (a tie counts as neither concordant nor discordant but stays in the "
    "denominator), and the same over the pairs both order strictly.",
    (
        ROUND, GROUP_ID,
        _c("source_a", pa.string(), "first source (alphabetical)"),
        _c("source_b", pa.string(), "second source"),
        _c("pairs", pa.int32(), "candidate pairs both sources have an opinion on"),
        _c("tau", pa.float64(), "(concordant - discordant) / pairs; null when pairs = 0", True),
        _c("decided_pairs", pa.int32(), "pairs both sources order strictly (neither ties them)"),
        _c("tau_decided", pa.float64(), "(concordant - discordant) / decided_pairs: agreement "
           "where both take a side (Goodman-Kruskal gamma); null when decided_pairs = 0", True),
    ),
    key=("group_id", "source_a", "source_b"),
)

SOURCE_GROUPS = Table(
    "source_groups", "Per group and source: the source's ties, and whether its own winner is a "
    "consensus winner. A source's winner is the candidate that wins most of its own verdicts (a "
    "tie counts half): its best mean score, its best rank, or the most reconciled pairwise wins.",
    (
        ROUND, GROUP_ID,
        _c("source", pa.string(), "a judgment source that compares at least two of the "
           "group's candidates"),
        _c("judged", pa.int32(), "candidates the source has an opinion on"),
        _c("tied", pa.int32(), "candidates it ties with another of the group: the same mean "
           "score over views (in float32, as the ranking compares them), the same rank, or a "
           "tie verdict"),
        _c("best", pa.int32(), "candidates sharing the source's best (2 or more: it names no "
           "single winner)"),
        _c("agrees", pa.bool_(), "one of the source's best candidates is a consensus winner "
           "(rank 0)"),
    ),
    key=("group_id", "source"),
)

QUARANTINE = Table(
    "quarantine", "Rejected input rows, each with the reason it was rejected.",
    (
        _c("source_file", pa.string(), "file the row came from"),
        _c("file_sha256", pa.string(), "content hash of that file (re-imports are no-ops)"),
        _c("row_number", pa.int64(), "where to look: the spreadsheet row of a CSV (header = 1), "
           "the line of JSON lines, the position of the result in a JSON export"),
        _c("reason", pa.string(), "why it was rejected"),
        _c("raw", pa.string(), "the row as read"),
    ),
    key=("file_sha256", "row_number"),
)

SUPERSEDED_HUMAN = Table(
    "superseded_human",
    "Human judgments replaced by a later import from the same annotator for the same group "
    "(the history behind `judgments`; only the newest ranking is merged).",
    (
        *JUDGMENTS.columns,
        _c("imported_from", pa.string(), "first 16 hex digits of the SHA-256 of their file"),
        _c("superseded_by", pa.string(), "same, of the imported file that replaced them"),
    ),
    key=("candidate_id", "source", "view", "opponent_id", "superseded_by"),
)

ANNOTATION_EXPORTS = Table(
    "annotation_exports", "Which groups each annotation export sent to people, and how they "
    "were chosen (a selected sample vs a random one).",
    (
        ROUND, GROUP_ID,
        _c("export_id", pa.string(), "rNNN-eNNNN, also in the exported files' names"),
        _c("position", pa.int32(), "1-based place in the export, in the order chosen"),
        _c("selection", pa.string(), "random, disagreement, uncertainty or cycles"),
        _c("selection_score", pa.float64(), "what it was chosen on: mean Kendall tau between "
           "machine sources (disagreement), smallest consensus strength gap between neighbours "
           "(uncertainty), 3-cycles over all sources (cycles); null for random", True),
        _c("seed", pa.int64(), "seed of the random order (random picks, ties between scores)"),
        _c("format", pa.string(), "csv, label-studio or argilla"),
        _c("exported_at", pa.string(), "UTC time of the export, ISO 8601"),
    ),
    key=("export_id", "group_id"),
)

EVALS = Table(
    "evals", "Held-out evaluation of policy r (r trainings after the base), one row per metric.",
    (
        ROUND,
        _c("metric", pa.string(), "gold_score, exact, train_reward, kl_to_base, length, "
           "hack_rate, win_rate_vs_base, overoptimised (1 = flagged)"),
        _c("value", pa.float64(), "the metric's value"),
    ),
    key=("round", "metric"),
)

EVAL_SCORES = Table(
    "eval_scores", "Per-sample scores of a round's held-out evaluation "
    "(rounds/rNNN/eval/scores.parquet; not a catalog table).",
    (_c("candidate_id", pa.string(), "the held-out sample"),
     _c("prompt_id", pa.string(), "its prompt"),
     _c("candidate_idx", pa.int32(), "its index among the prompt's eval_k samples"),
     _c("gold", pa.float64(), "the gold source's score; null without gold or on failure", True),
     _c("train_reward", pa.float64(), "mean score of the training-reward sources", True)),
    key=("candidate_id",),
)

TABLES: dict[str, Table] = {t.name: t for t in
                            (PROMPTS, CANDIDATES, JUDGMENTS, RANKINGS, GROUPS, CYCLES, AGREEMENT,
                             SOURCE_GROUPS, QUARANTINE, EVALS, SUPERSEDED_HUMAN,
                             ANNOTATION_EXPORTS)}


def validate(table: pa.Table, spec: Table, where: str = "") -> pa.Table:
    """Check columns, types, nulls and key uniqueness; return the table in schema order.

    Extra columns are an error rather than silently dropped: they usually mean a stage was
    written against another version of the schema.
    """
    label = f"{spec.name}" + (f" ({where})" if where else "")
    expected = {c.name: c for c in spec.columns}
    missing = [n for n in expected if n not in table.column_names]
    extra = [n for n in table.column_names if n not in expected]
    if missing or extra:
        raise SchemaError(f"{label}: missing columns {missing}, unexpected columns {extra}")
    for col in spec.columns:
        actual = table.schema.field(col.name).type
        if actual != col.type:
            if not pa.types.is_null(actual) and not _castable(actual, col.type):
                raise SchemaError(f"{label}: column {col.name} is {actual}, expected {col.type}")
        if not col.nullable and table.column(col.name).null_count:
            raise SchemaError(f"{label}: column {col.name} has "
                              f"{table.column(col.name).null_count} nulls; it may not be null")
    table = table.select(list(expected)).cast(spec.arrow_schema)
    if table.num_rows:
        # polars' hashing: 2.6x faster than Arrow's group_by on 400k candidate ids, and this
        # runs on every chunk the ranking stage writes (a tenth of its time at 1M groups).
        keys = pl.from_arrow(table.select(list(spec.key)))
        duplicated = keys.is_duplicated()
        if duplicated.any():
            dupes = keys.filter(duplicated).unique(maintain_order=True)
            raise SchemaError(f"{label}: {dupes.height} duplicate key(s) on {spec.key}, "
                              f"e.g. {dupes.row(0, named=True)}")
    return table


def _castable(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Only between kinds that hold the same values: integer or float widths, large and
    normal strings and lists (polars writes the large ones), and lists and structs of such;
    never string <-> number."""
    if actual == expected:
        return True
    lists = pa.types.is_list(actual) or pa.types.is_large_list(actual)
    if lists and pa.types.is_list(expected):
        return _castable(actual.value_type, expected.value_type)
    if pa.types.is_struct(actual) and pa.types.is_struct(expected):
        names = [f.name for f in actual]
        return names == [f.name for f in expected] and all(
            _castable(a.type, e.type) for a, e in zip(actual, expected, strict=True))
    ints = pa.types.is_integer
    floats = pa.types.is_floating
    return (ints(actual) and ints(expected)) or (floats(actual) and floats(expected)) or (
        ints(actual) and floats(expected)) or (
        pa.types.is_large_string(actual) and pa.types.is_string(expected))


def describe() -> str:
    """The schema as Markdown, for `grpo schema` and the README."""
    out = []
    for t in TABLES.values():
        out.append(f"### `{t.name}`: {t.doc}\nKey: {', '.join(t.key)}\n")
        out.append("| column | type | meaning |\n|---|---|---|")
        for c in t.columns:
            nullable = " (nullable)" if c.nullable else ""
            out.append(f"| `{c.name}` | {c.type}{nullable} | {c.doc} |")
        out.append("")
    return "\n".join(out)
