"""A real Label Studio on 127.0.0.1 (SQLite in a temp dir), from the project's own
``.venv-label-studio`` (``scripts/install_label_studio.sh``), and the REST calls an annotation
team would make. Used by tests/test_label_studio.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LS_BIN = Path(os.environ.get("LABEL_STUDIO_BIN", ROOT / ".venv-label-studio" / "bin"
                             / "label-studio"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    def __init__(self, data_dir: Path, token: str = "grpo-test-token") -> None:
        if not LS_BIN.exists():
            raise RuntimeError(f"{LS_BIN} is missing: run `make install-label-studio` "
                               "(scripts/install_label_studio.sh)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log = open(data_dir / "label-studio.log", "wb")  # noqa: SIM115 (kept open)
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir / "data"),
               "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
               "HOME": str(data_dir)}  # nothing lands in the real home directory
        self.proc = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--host", "127.0.0.1",
             "--port", str(self.port), "--data-dir", str(data_dir / "data"),
             "--username", "lead@example.com", "--password", "grpo-test-pass",
             "--user-token", token, "--enable-legacy-api-token"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, timeout=60,
                                   headers={"Authorization": f"Token {token}"})

    def wait(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}; see "
                                   f"{self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"label-studio did not answer /health in {timeout} s")

    def api(self, method: str, path: str, **kwargs):
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def sign_up(self, email: str, password: str) -> str:
        """A new annotator signs up in the web UI (form + CSRF, as a browser does); returns
        the API token Label Studio gives that person."""
        with httpx.Client(base_url=self.url, timeout=60) as browser:
            browser.get("/user/signup/")
            form = {"email": email, "password": password,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
            r = browser.post("/user/signup/", data=form,
                             headers={"Referer": f"{self.url}/user/signup/"})
            if r.status_code != 302:
                raise RuntimeError(f"sign-up of {email} failed: {r.status_code}")
            return browser.get("/api/current-user/token").json()["token"]

    def as_user(self, token: str) -> LabelStudio:
        """The same server, seen through another person's token."""
        other = object.__new__(LabelStudio)
        other.__dict__ = {**self.__dict__, "token": token, "client": httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Token {token}"})}
        return other

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and workers
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
