"""`grpo`: the command line. Each subcommand parses arguments, builds a config and calls
one flow or library function; nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

from pipeline.config import ConfigError, load_config

DEFAULT_WORKDIR = "runs/demo"


def _parse_set(items: list[str]) -> dict:
    """--set generation.k=4 --set policy.model='"/models/x"' (values are TOML literals;
    a bare word is taken as a string)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default=DEFAULT_WORKDIR,
                   help=f"run directory: models, data, catalog (default {DEFAULT_WORKDIR})")
    p.add_argument("--config", default=None,
                   help="TOML config (default: the embedded demo config, data/demo.toml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config field; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpo", description="Group-relative preference data: generate, judge, rank, "
                                 "audit and train on ranked groups.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-demo-model", help="train the embedded tiny policy on the demo task")
    _common(p)
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")

    p = sub.add_parser("generate", help="sample k candidates per prompt with vLLM (Prefect flow)")
    _common(p)
    p.add_argument("--round", type=int, default=0, help="round to generate (default 0)")

    p = sub.add_parser("db", help="catalog maintenance")
    _common(p)
    p.add_argument("action", choices=["rebuild"],
                   help="rebuild catalog.duckdb from the Parquet files")

    p = sub.add_parser("audit", help="list or run the SQL audit queries in sql/")
    _common(p)
    p.add_argument("name", nargs="?", help="query to run; omit to list them")
    p.add_argument("--csv", type=Path, help="also save the result as CSV")
    p.add_argument("--parquet", type=Path, help="also save the result as Parquet")

    p = sub.add_parser("judge", help="judge a round with the verifier, reward models and the "
                                     "LLM judge (Prefect flow)")
    _common(p)
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--sources", default=None,
                   help="comma-separated subset of judging.sources (verifier,reward_model,llm)")

    p = sub.add_parser("rank", help="merge every source into consensus rankings; find cycles "
                                    "and disagreement (Prefect flow)")
    _common(p)
    p.add_argument("--round", type=int, default=0)

    p = sub.add_parser("export-annotation", help="write groups for human annotators (CSV, JSONL)")
    _common(p)
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder (default WORKDIR/annotation)")
    p.add_argument("--groups", type=int, default=None, help="at most this many groups")

    p = sub.add_parser("import-human", help="import annotators' rankings (CSV or JSONL)")
    _common(p)
    p.add_argument("file", type=Path, help="ranking rows or pairwise rows; see README")

    p = sub.add_parser("train", help="groupwise preference training on ranked rounds "
                                     "(Prefect flow)")
    _common(p)
    p.add_argument("--rounds", default="0", help="comma-separated rounds to train on")
    p.add_argument("--output", default=None, help="model directory to write "
                                                  "(default WORKDIR/models/policy-rNNN)")
    p.add_argument("--reference", default=None, help="reference model (default: the policy)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint")

    p = sub.add_parser("iterate", help="rounds of generate, judge, rank, train, evaluate "
                                       "(Prefect flow; resumes after a crash)")
    _common(p)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default loop.rounds)")

    p = sub.add_parser("demo", help="the embedded default end to end: build the demo models "
                                    "if missing, then iterate")
    _common(p)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default loop.rounds)")

    p = sub.add_parser("serve", help="register the flows as scheduled Prefect deployments "
                                     "and serve them")
    _common(p)
    p.add_argument("--register-only", action="store_true",
                   help="register the deployments and exit (a worker or `serve` runs them)")

    p = sub.add_parser("schema", help="print the ranked-group dataset schema")
    _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Telemetry writes race the temporary server's SQLite database ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        return _dispatch(args)
    # ValueError covers ConfigError, SchemaError and ImportFileError: problems with the
    # user's input whose message says what to fix. GRPO_DEBUG=1 shows the traceback.
    except (ValueError, KeyError, FileNotFoundError) as err:
        if os.environ.get("GRPO_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"grpo {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    overrides = _parse_set(args.set)
    cfg = load_config(args.config, overrides)  # validate before any work, whatever the command

    if args.command == "build-demo-model":
        from flows.demo import build_demo_models

        if cfg.policy.model != "demo":
            raise ConfigError("policy.model: build-demo-model builds the 'demo' policy; "
                              f"the config points at {cfg.policy.model}")
        built = build_demo_models(str(workdir), args.config, overrides, force=args.force)
        print(json.dumps(built or {"kept": "both demo models exist (use --force to rebuild)"},
                         indent=2))
        return 0

    if args.command == "generate":
        from flows.generate import generation_flow

        cfg.require_policy(workdir)
        summary = generation_flow(str(workdir), args.config, args.round, overrides)
        summary.pop("shard_results")
        print(json.dumps(summary, indent=2))
        return 0

    if args.command == "judge":
        from flows.judge import judge_flow

        if args.sources:
            overrides["judging.sources"] = args.sources.split(",")
            load_config(args.config, overrides)  # validate the subset before any work
        print(json.dumps(judge_flow(str(workdir), args.config, args.round, overrides),
                         indent=2))
        return 0

    if args.command == "rank":
        from flows.rank import rank_flow

        print(json.dumps(rank_flow(str(workdir), args.config, args.round, overrides), indent=2))
        return 0

    if args.command == "export-annotation":
        from pipeline.humans import export_annotation

        csv_path, jsonl_path = export_annotation(workdir, args.round,
                                                 args.out or workdir / "annotation", args.groups)
        print(json.dumps({"csv": str(csv_path), "jsonl": str(jsonl_path)}, indent=2))
        return 0

    if args.command == "import-human":
        from pipeline.humans import import_human_file

        report = import_human_file(workdir, args.file)
        print(json.dumps(report.__dict__ | {"catalog_rows": _rebuild(workdir)}, indent=2))
        return 0

    if args.command == "train":
        from flows.train import train_flow

        cfg.require_policy(workdir)
        rounds = [int(r) for r in args.rounds.split(",")]
        result = train_flow(str(workdir), args.config, rounds, overrides, args.output,
                            args.reference, args.resume)
        print(json.dumps(result, indent=2))
        return 0

    if args.command in ("iterate", "demo"):
        from flows.iterate import iterate_flow

        if args.command == "demo" and cfg.policy.model == "demo":
            from flows.demo import build_demo_models

            build_demo_models(str(workdir), args.config, overrides)
        result = iterate_flow(str(workdir), args.config, overrides, args.rounds)
        _print_summary(result)
        return 0

    if args.command == "serve":
        from flows.serve import build_deployments, register, serve

        deployments = build_deployments(cfg, workdir, args.config)
        if not deployments:
            raise ConfigError("schedule: every cron is empty; nothing to serve")
        if args.register_only:
            print(json.dumps(register(deployments), indent=2))
            return 0
        serve(deployments)
        return 0

    if args.command == "db":
        print(json.dumps(_rebuild(workdir), indent=2))
        return 0

    if args.command == "audit":
        return _audit(workdir, args)

    if args.command == "schema":
        from pipeline.schema import describe

        print(describe())
        return 0
    raise AssertionError(args.command)


def _print_summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*result["header"], title="grpo loop: held-out evaluation by round")
    for row in result["rows"]:
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for note in result["notes"]:
        console.print(f"[bold red]{note}")
    console.print(f"report: {result['report']}")


def _rebuild(workdir: Path) -> dict:
    from pipeline.catalog import rebuild

    return rebuild(workdir)


def _audit(workdir: Path, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.audit import list_queries, run_query

    # Off a terminal rich would squeeze wide audit tables into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 250)
    if not args.name:
        t = Table("query")
        # Whole summaries: wrapped to the terminal, never cut with an ellipsis.
        t.add_column("what it shows", overflow="fold")
        for q in list_queries():
            t.add_row(q.name, q.summary)
        console.print(t)
        return 0
    result = run_query(workdir, args.name)
    t = Table(*result.column_names, title=args.name)
    for row in result.to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(t)
    if args.csv:
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, args.csv)
    if args.parquet:
        import pyarrow.parquet as pq

        pq.write_table(result, args.parquet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
