"""Prefect flows: orchestration only; the work is in ``pipeline`` and ``trainers``."""

import os

# Without PREFECT_API_URL every flow run starts a temporary Prefect server, which Prefect gives
# 20 s to come up; on a 2-core machine busy with a vLLM engine or training it can take longer
# ("Timed out while attempting to connect to ephemeral Prefect API server", seen in the test
# suite). Set here, before any flow runs, for the CLI, the benchmarks and library callers;
# a value the user sets wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
