"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on request.

The behaviour is chosen per group by the user turn of the judge prompt
(``<turn role="user">S 12=<mode></turn>``).
Honest answers score each candidate by the first digit of its text, a function of the
candidate alone, so a wrong mapping from a shuffled view back to candidates is visible.
Every request is recorded (time, mode, prompt).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = re.compile(r'<candidate id="(\w+)">(.*?)</candidate>', re.S)
TASK = re.compile(r'<turn role="user">S \d+=(\w+)</turn>')


def honest_scores(texts: list[str]) -> list[int]:
    return [int(t[0]) if t[:1].isdigit() else 0 for t in texts]


class FakeJudge:
    def __init__(self, retry_after: float = 0.3) -> None:
        self.retry_after = retry_after
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # /v1/models
                self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body.get("prompt") or body["messages"][-1]["content"]
                server.handle(self, prompt, body)

            def _json(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, h, prompt: str, body: dict) -> None:
        m = TASK.search(prompt)
        mode = m.group(1) if m else "ok"
        blocks = BLOCK.findall(prompt)
        with self.lock:
            n = self.seen.get(prompt, 0)
            self.seen[prompt] = n + 1
            self.requests.append({"t": time.monotonic(), "mode": mode, "prompt": prompt,
                                  "attempt": n})
        if mode == "ratelimited" and n == 0:
            return h._json(429, {"error": {"message": "slow down"}},
                           {"Retry-After": str(self.retry_after)})
        if mode == "error500" or (mode == "flaky500" and n == 0):
            return h._json(500, {"error": {"message": "boom"}})
        if mode == "reset":
            h.close_connection = True
            h.connection.shutdown(2)  # a reset, not an answer
            return None
        if mode == "hang":
            time.sleep(3)
        texts = [t for _, t in blocks]
        scores = honest_scores(texts)
        text = {
            "prose": "I think the second candidate is clearly the best one.",
            "truncated": '{"scores": [' + ", ".join(map(str, scores))[:3],
            "refusal": "I'm sorry, but I can't help with judging these answers.",
            "wrongcount": json.dumps({"scores": scores[:-1]}),
            "outofrange": json.dumps({"scores": [42] + scores[1:]}),
        }.get(mode)
        if text is None:
            if len(blocks) == 2 and blocks[0][0] == "A":  # pairwise
                a, b = scores
                text = json.dumps({"better": "A" if a > b else "B" if b > a else "tie"})
            else:
                text = json.dumps({"scores": scores})
        choice = ({"index": 0, "text": text, "finish_reason": "stop"} if "prompt" in body else
                  {"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "stop"})
        h._json(200, {"id": "x", "object": "text_completion", "created": 0, "model": "fake",
                      "choices": [choice],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
