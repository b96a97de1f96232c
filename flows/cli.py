"""`grpo`: the command line. Each subcommand parses arguments, builds a config, checks every
path and round it will need (before Prefect or an engine starts), and calls one flow or
library function; nothing else lives here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
import tomllib
from collections.abc import Iterator
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


def _round(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--round", type=int, default=None, help=f"round (default: {default})")


def _prompts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", default=None, metavar="PATH",
                   help="prompts file, glob or save_to_disk directory (sets prompts.path)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpo", description="Group-relative preference data: generate, judge, rank, "
                                 "audit and train on ranked groups.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-demo-model", help="build the embedded demo: its prompts file, "
                                                "tiny policy, reward model and judge")
    _common(p)
    p.add_argument("--force", action="store_true", help="rebuild even if they exist")

    p = sub.add_parser("generate", help="sample k candidates per prompt with vLLM (Prefect flow)")
    _common(p)
    _round(p, "the first round not fully generated")
    _prompts(p)

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
    _round(p, "the newest fully generated round")
    p.add_argument("--sources", default=None,
                   help="comma-separated subset of judging.sources (verifier,reward_model,llm)")

    p = sub.add_parser("rank", help="merge every source into consensus rankings; find cycles "
                                    "and disagreement (Prefect flow)")
    _common(p)
    _round(p, "the newest fully judged round")

    p = sub.add_parser("export-annotation", help="write groups for human annotators (CSV + "
                                                 "JSON lines, Label Studio or Argilla)")
    _common(p)
    _round(p, "the newest round with candidates")
    p.add_argument("--out", type=Path, default=None, help="folder (default WORKDIR/annotation)")
    p.add_argument("--groups", type=int, default=None,
                   help="at most this many groups (default: every eligible group)")
    p.add_argument("--format", choices=["csv", "label-studio", "argilla"], default="csv",
                   help="csv: CSV + JSON lines twin; label-studio: tasks JSON + labeling "
                        "config; argilla: a Dataset.to_disk directory (default csv)")
    p.add_argument("--select", choices=["random", "disagreement", "uncertainty", "cycles"],
                   default="random",
                   help="which groups: random (default, unbiased), disagreement (lowest "
                        "Kendall tau between machine sources), uncertainty (smallest "
                        "consensus strength gap), cycles (groups with preference cycles)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (default: the export's number, so each export draws anew)")
    p.add_argument("--include-annotated", action="store_true",
                   help="also export groups someone has ranked already")

    p = sub.add_parser("import-human", help="import annotators' rankings: CSV or JSON lines "
                                            "rows, Label Studio or Argilla exports")
    _common(p)
    p.add_argument("file", type=Path, help="ranking rows, pairwise rows, an export's filled-in "
                                           "JSON lines, a Label Studio JSON export or an "
                                           "Argilla flattened export; see README")

    p = sub.add_parser("export", help="write ranked groups for other trainers: trl "
                                      "preference pairs or one row per group (listwise)")
    _common(p)
    p.add_argument("--format", choices=["trl", "listwise"], default="trl",
                   help="trl: prompt/chosen/rejected pairs; listwise: prompt, completions "
                        "best first, ranks (ties kept), group weight (default trl)")
    p.add_argument("--pairs", choices=["best_worst", "all"], default=None,
                   help="trl only: best_worst (default; best tier vs worst tier) or all "
                        "(every strictly ordered pair); ties never become a pair")
    p.add_argument("--out", type=Path, required=True,
                   help="a .parquet or .jsonl file, or a directory (datasets save_to_disk)")
    p.add_argument("--rounds", default=None,
                   help="comma-separated rounds (default: every ranked round)")
    p.add_argument("--text", action="store_true",
                   help="string prompts rendered with the policy's chat template instead of "
                        "messages (trl's standard layout)")

    p = sub.add_parser("train", help="groupwise preference training on ranked rounds "
                                     "(Prefect flow)")
    _common(p)
    p.add_argument("--rounds", default=None,
                   help="comma-separated rounds to train on (default: the newest ranked round)")
    p.add_argument("--output", default=None, help="model directory to write "
                                                  "(default WORKDIR/models/policy-rNNN)")
    p.add_argument("--reference", default=None, help="reference model (default: the policy "
                                                     "that generated the rounds)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing output model")

    p = sub.add_parser("iterate", help="rounds of generate, judge, rank, train, evaluate "
                                       "(Prefect flow; resumes after a crash)")
    _common(p)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default loop.rounds)")
    _prompts(p)

    p = sub.add_parser("demo", help="the embedded default end to end: build the demo models "
                                    "if missing, then iterate")
    _common(p)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default loop.rounds)")
    _prompts(p)

    p = sub.add_parser("serve", help="register the flows as scheduled Prefect deployments "
                                     "and serve them")
    _common(p)
    p.add_argument("--register-only", action="store_true",
                   help="register the deployments and exit (a worker or `serve` runs them)")

    p = sub.add_parser("fleet", help="several workers share one round (README: A fleet of "
                                     "workers): deploy, submit runs, or work here")
    _common(p)
    p.add_argument("action", choices=["deploy", "submit", "work"],
                   help="deploy: register the worker flows on a process work pool; submit: "
                        "start worker runs on a round; work: be one worker in this process")
    p.add_argument("stage", nargs="?", choices=["generate", "judge"], default="generate")
    p.add_argument("--round", type=int, default=0, help="the round the workers share")
    p.add_argument("--pool", default="grpo", help="deploy: the process work pool (default grpo)")
    p.add_argument("--runs", type=int, default=None,
                   help="submit: worker runs to start (default generation.data_parallel_size)")
    p.add_argument("--wait", action="store_true",
                   help="submit: wait for the runs to finish, then rebuild the catalog")

    p = sub.add_parser("schema", help="print the ranked-group dataset schema")
    _common(p)
    p = sub.add_parser("config-schema", help="print the config's JSON Schema (every field, "
                                             "its type, default and help)")
    _common(p)
    return parser


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While a command runs, SIGTERM (a scheduler's stop: Slurm, Kubernetes, systemd,
    `timeout`) ends it as Ctrl-C does, by an exception: `finally` blocks and atexit handlers
    then stop the vLLM engine, the judge server and Prefect's temporary server. Python's
    default action ends the process at once and leaves those running, holding their memory.
    The handler before it comes back when the command returns (a program or a test calling
    ``main`` in-process keeps its own), so a second SIGTERM during the clean-up after it
    ends the process at once. Only the main thread can set a handler: elsewhere nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        signal.signal(signum, previous)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_chain(err: BaseException | None, match) -> BaseException | None:
    """The first exception in ``err``'s chain (causes and contexts) that ``match`` accepts."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if match(err):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _terminated(err: BaseException) -> bool:
    """Whether ``err`` was raised while a SIGTERM was being handled. During a flow run
    Prefect's own SIGTERM handler raises TerminationSignal instead of ours, and its task
    engine can turn that into another error (seen: ValueError('Task run is not set') when
    the signal lands as a task starts; a client error when Prefect's temporary server got
    the signal too), which must be reported as the stop, not as bad input or a crash."""
    from prefect.exceptions import TerminationSignal

    return _in_chain(err, lambda e: isinstance(e, TerminationSignal)) is not None


_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(err: BaseException) -> BaseException | None:
    """The out-of-space error (a full disk or a spent quota) in ``err``'s chain, if any:
    an OSError with its errno (Python, pyarrow), or another library's error that carries
    only the C library's text (DuckDB's IOException and TransactionException, safetensors)."""
    texts = tuple(os.strerror(code) for code in _OUT_OF_SPACE)
    return _in_chain(err, lambda e: (isinstance(e, OSError) and e.errno in _OUT_OF_SPACE)
                     or any(t in str(e) for t in texts))


def _disk_full_message(args: argparse.Namespace, err: BaseException) -> str:
    where = getattr(err, "filename", None) or getattr(args, "workdir", None) or os.getcwd()
    free = ""
    with contextlib.suppress(OSError):
        probe = Path(where)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        left = shutil.disk_usage(probe).free
        free = f"{left / 2**20:.1f} MiB free there now, " if left >= 2**20 else \
            f"{left // 2**10} KiB free there now, "
    return (f"grpo {args.command}: error: no space left on the device holding {where} "
            f"({free}or a disk quota is spent). "
            "Nothing half-written is kept and everything finished is: free space (or use a "
            "--workdir on a larger disk) and rerun the same command to go on")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Telemetry writes race the temporary server's SQLite database ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Logs go to stderr, so that stdout holds only the command's JSON result.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        with _sigterm_exits():
            return _dispatch(args)
    except BaseException as err:
        if not isinstance(err, SystemExit) and _terminated(err):
            print(f"grpo {args.command}: stopped by SIGTERM; what was written is kept and "
                  "the same command resumes", file=sys.stderr)
            return 128 + signal.SIGTERM
        # A SIGTERM or Ctrl-C during the clean-up after a full disk is still that.
        full = _disk_full(err) if isinstance(err, Exception) else None
        if full is not None and not os.environ.get("GRPO_DEBUG"):
            print(_disk_full_message(args, full), file=sys.stderr)
            if full is not err:  # raised while handling it: shown, not hidden
                print(f"grpo {args.command}: then, while handling it: "
                      f"{type(err).__name__}: {err}", file=sys.stderr)
            return 1
        # ValueError covers ConfigError, SchemaError and ImportFileError: problems with the
        # user's input whose message says what to fix. GRPO_DEBUG=1 shows the traceback.
        if not isinstance(err, (ValueError, KeyError, FileNotFoundError)) \
                or os.environ.get("GRPO_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"grpo {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _say(command: str, text: str) -> None:
    print(f"grpo {command}: {text}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline import resolve, rounds

    workdir = Path(args.workdir)
    overrides = _parse_set(args.set)
    if getattr(args, "prompts", None):
        overrides["prompts.path"] = args.prompts
    if getattr(args, "sources", None):
        overrides["judging.sources"] = args.sources.split(",")
    cfg = load_config(args.config, overrides)  # validate before any work, whatever the command
    cmd = args.command

    if cmd == "build-demo-model":
        from flows.demo import build_demo_models

        if cfg.policy.model != "demo":
            raise ConfigError("policy.model: build-demo-model builds the 'demo' policy; "
                              f"the config points at {cfg.policy.model}")
        built = build_demo_models(str(workdir), args.config, overrides, force=args.force)
        if not set(built) - {"not_built"}:
            built["kept"] = ("the demo models exist, built with these settings (use --force to "
                             "rebuild)")
        _print(built)
        return 0

    if cmd == "generate":
        from flows.generate import generation_flow

        resolve.preflight(cfg, workdir, policy=True, prompts=True)
        round_ = args.round if args.round is not None else rounds.next_round_to_generate(workdir)
        _say(cmd, f"round {round_}")
        summary = generation_flow(str(workdir), args.config, round_, overrides)
        summary.pop("shard_results")
        _print(summary)
        return 0

    if cmd == "judge":
        from flows.judge import judge_flow

        resolve.preflight(cfg, workdir, judges=True)
        round_ = args.round if args.round is not None else \
            rounds.newest_round(workdir, "generate", "judge", "is fully generated")
        _require_round(workdir, round_, "generate")
        _say(cmd, f"round {round_}")
        _print(judge_flow(str(workdir), args.config, round_, overrides))
        return 0

    if cmd == "rank":
        from flows.rank import rank_flow
        from pipeline.rank_inputs import rank_inputs

        round_ = args.round if args.round is not None else \
            rounds.newest_round(workdir, "judge", "rank", "is fully judged")
        rank_inputs(cfg, workdir, round_)  # every source complete, before Prefect starts
        _say(cmd, f"round {round_}")
        _print(rank_flow(str(workdir), args.config, round_, overrides))
        return 0

    if cmd == "export-annotation":
        from dataclasses import asdict

        from pipeline.annotation import export_annotation

        round_ = args.round if args.round is not None else \
            rounds.newest_round(workdir, "generate", cmd, "is fully generated")
        _require_round(workdir, round_, "generate")
        _say(cmd, f"round {round_}")
        result = export_annotation(workdir, round_, args.out, args.groups, args.format,
                                   args.select, args.seed, args.include_annotated)
        _print(asdict(result))
        return 0

    if cmd == "import-human":
        from pipeline.annotation import import_human_file

        if not args.file.is_file():
            raise FileNotFoundError(f"no such file {args.file}")
        report = import_human_file(workdir, args.file)
        _print(report.__dict__ | {"catalog_rows": _rebuild(workdir)})
        return 0

    if cmd == "export":
        from dataclasses import asdict

        from pipeline.export import export_ranked

        try:
            export_rounds = [int(r) for r in args.rounds.split(",")] if args.rounds else None
        except ValueError:
            raise ValueError(f"--rounds {args.rounds!r}: expected comma-separated round "
                             "numbers, e.g. 0,1") from None
        result = export_ranked(workdir, args.out, args.format, args.pairs, export_rounds,
                               args.text)
        _say(cmd, f"{result.rows_written} rows from {result.groups_written} of "
                  f"{result.groups_read} groups to {result.out}")
        _print(asdict(result))
        return 0

    if cmd == "train":
        from flows.train import train_flow, training_policy

        train_rounds = [int(r) for r in args.rounds.split(",")] if args.rounds else \
            [rounds.newest_round(workdir, "rank", "train", "is ranked")]
        training_policy(workdir, train_rounds)  # checked before Prefect starts
        _say(cmd, f"round(s) {train_rounds}")
        _print(train_flow(str(workdir), args.config, train_rounds, overrides, args.output,
                          args.reference, args.resume, args.force))
        return 0

    if cmd in ("iterate", "demo"):
        from flows.iterate import iterate_flow

        if cmd == "demo" and cfg.policy.model == "demo":
            from flows.demo import build_demo_models

            build_demo_models(str(workdir), args.config, overrides)
        resolve.preflight(cfg, workdir, policy=True, prompts=True, judges=True)
        result = iterate_flow(str(workdir), args.config, overrides, args.rounds)
        _print_summary(result)
        return 0

    if cmd == "serve":
        from flows.serve import build_deployments, register, serve

        deployments = build_deployments(cfg, workdir, args.config)
        if not deployments:
            raise ConfigError("schedule: every cron is empty; nothing to serve")
        if args.register_only:
            _print(register(deployments))
            return 0
        serve(deployments)
        return 0

    if cmd == "fleet":
        return _fleet(workdir, cfg, overrides, args)

    if cmd == "db":
        _print(_rebuild(workdir))
        return 0

    if cmd == "audit":
        return _audit(workdir, args)

    if cmd == "schema":
        from pipeline.schema import describe

        print(describe())
        return 0

    if cmd == "config-schema":
        from pipeline.config import Config

        _print(Config.model_json_schema())
        return 0
    raise AssertionError(cmd)


def _require_round(workdir: Path, round_: int, stage: str) -> None:
    from pipeline.rounds import stage_done

    if not stage_done(workdir, round_, stage):
        raise FileNotFoundError(f"round {round_} of {workdir} is not {stage}d yet (no "
                                f"rounds/r{round_:03d}/_stages/{stage}.json); run `grpo {stage} "
                                f"--round {round_}` first")


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
    engine = result.get("engine")
    if engine and engine["starts"]:
        console.print(f"policy engine: {engine['starts']} start(s) ({engine['startup_s']} s), "
                      f"{engine['reloads']} weight reload(s) ({engine['reload_s']} s)")
        for reason in engine["restarts"]:
            console.print(f"  restarted: {reason}")
    judge_server = result.get("judge_server")
    if judge_server and judge_server["started_early"]:
        ready = judge_server["ready_after_s"]
        console.print("judge server: started with the loop, " + (
            f"answering {ready} s after its launch" if ready is not None else "never asked"))
    console.print(f"report: {result['report']}")


def _fleet(workdir: Path, cfg, overrides: dict, args: argparse.Namespace) -> int:
    from flows import fleet
    from pipeline.resolve import preflight

    if args.action == "deploy":
        _print(fleet.deploy(args.pool, workdir, args.config, overrides))
        return 0
    if args.action == "work":
        if args.stage == "generate":
            preflight(cfg, workdir, policy=True, prompts=True)
            result = fleet.generate_worker_flow(str(workdir), args.config, args.round, overrides)
        else:
            preflight(cfg, workdir, judges=True)
            result = fleet.judge_worker_flow(str(workdir), args.config, args.round, overrides)
        _print(result)
        return 0
    runs = args.runs or cfg.generation.data_parallel_size
    ids, deployed_workdir = fleet.submit(args.stage, args.round, runs)
    if not args.wait:
        _print(ids)
        return 0
    states = fleet.wait_for_runs(ids, timeout_s=float("inf"))
    _print({"runs": states, "catalog_rows": _rebuild(deployed_workdir)})
    return 0 if all(s == "Completed" for s in states.values()) else 1


def _rebuild(workdir: Path) -> dict:
    from pipeline.catalog import rebuild

    if not workdir.is_dir():
        raise FileNotFoundError(f"no workdir {workdir}; run `grpo generate --workdir "
                                f"{workdir}` first")
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
    if not workdir.is_dir():
        raise FileNotFoundError(f"no workdir {workdir}; run `grpo generate --workdir "
                                f"{workdir}` first (or pass --workdir)")
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
