import pyarrow as pa
import pytest

from pipeline.schema import CANDIDATES, TABLES, SchemaError, describe, validate


def _row(i=0, **kw):
    row = {"round": 0, "group_id": "r000:p", "prompt_id": "p", "candidate_idx": i,
           "candidate_id": f"r000:p:{i}", "text": "123", "token_ids": [5, 6, 7], "policy": "m",
           "n_tokens": 3, "stop_token_id": 2,
           "finish_reason": "stop", "logprob": -1.5, "seed": 7, "config_hash": "abc",
           "injection": None}
    row.update(kw)
    return row


def test_valid_table_passes_and_is_put_in_schema_order():
    t = pa.Table.from_pylist([_row(0), _row(1)])
    out = validate(t.select(list(reversed(t.column_names))), CANDIDATES)
    assert out.schema == CANDIDATES.arrow_schema
    assert out.num_rows == 2


def test_missing_and_extra_columns_are_named():
    t = pa.Table.from_pylist([_row()]).drop(["text"]).append_column("oops", pa.array([1]))
    with pytest.raises(SchemaError, match=r"missing columns \['text'\].*unexpected.*oops"):
        validate(t, CANDIDATES)


def test_wrong_type_and_nulls_are_rejected():
    t = pa.Table.from_pylist([_row(n_tokens="four")])
    with pytest.raises(SchemaError, match="n_tokens"):
        validate(t, CANDIDATES)
    t = pa.Table.from_pylist([_row(text=None), _row(1)])
    with pytest.raises(SchemaError, match="text has 1 nulls"):
        validate(t, CANDIDATES)
    # logprob is nullable (a real model directory may not report it).
    assert validate(pa.Table.from_pylist([_row(logprob=None)]), CANDIDATES).num_rows == 1


def test_duplicate_keys_are_rejected():
    t = pa.Table.from_pylist([_row(0), _row(0)])
    with pytest.raises(SchemaError, match="duplicate key"):
        validate(t, CANDIDATES)


def test_duplicate_key_count_agrees_with_arrows_group_by():
    """The check hashes keys with polars; Arrow's own group_by is the reference."""
    import ast
    import random

    from pipeline.schema import AGREEMENT

    rng = random.Random(0)
    for trial in range(20):
        rows = [{"round": 0, "group_id": f"g{rng.randint(0, 30)}",
                 "source_a": rng.choice(["a", "b"]), "source_b": rng.choice(["c", "d"]),
                 "pairs": 1, "tau": 0.0, "decided_pairs": 1, "tau_decided": 0.0}
                for _ in range(rng.randint(1, 60))]
        t = pa.Table.from_pylist(rows, AGREEMENT.arrow_schema)
        key = list(AGREEMENT.key)
        counts = t.group_by(key).aggregate([([], "count_all")])
        want = sum(c > 1 for c in counts["count_all"].to_pylist())
        if not want:
            assert validate(t, AGREEMENT).num_rows == len(rows)
            continue
        with pytest.raises(SchemaError, match=rf"{want} duplicate key\(s\)") as err:
            validate(t, AGREEMENT)
        example = ast.literal_eval(str(err.value).split("e.g. ")[1])
        match = [r for r in rows if all(r[k] == example[k] for k in key)]
        assert len(match) > 1, trial


def test_every_table_has_an_empty_form_and_docs():
    text = describe()
    for name, spec in TABLES.items():
        assert validate(spec.empty(), spec).num_rows == 0
        assert f"`{name}`" in text
        for col in spec.columns:
            assert col.doc, f"{name}.{col.name} is undocumented"


def test_readme_carries_the_schema_verbatim():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert describe() in readme, "README's schema section is stale: paste `grpo schema`"


def test_polars_style_wide_types_are_accepted():
    import polars as pl

    df = pl.DataFrame([_row(0), _row(1)])  # large_string, large_list<int64>, int64
    out = validate(df.to_arrow(), CANDIDATES)
    assert out.schema == CANDIDATES.arrow_schema
