"""A small OpenAI-compatible HTTP server for tests and benchmarks (stdlib only, 127.0.0.1, free port).

Endpoints: /v1/chat/completions, /v1/completions, /v1/files (+ /content), /v1/batches.
Answers are scripted by directives inside the prompt text:
  [[429:N:S]]  the first N tries get HTTP 429 with Retry-After: S seconds
  [[500:N]]    the first N tries get HTTP 500
  [[slow:S]]   sleep S seconds before answering
  [[400]]      always HTTP 400 (a request the API rejects)
  [[nousage]]  answer without a `usage` field
The answer is "answer to: <prompt text>" (cut at a stop string); usage counts words.
Every request is logged (`server.log`) with its prompt text, status and timing, so tests can
check what was paid for (`paid()`, `bill()`); a wrong API key gets 401 whose message echoes the
key (as some servers do), to test that the client redacts it.

Switches for whole-server failures (settable between runs, e.g. to make the server healthy again):
  fail_share=(k, n)  prompts whose crc32 % n < k fail *for good*: HTTP 500 with Retry-After: 0 on
                     every try (retries are quick, and all fail)
  models={...}       only these models are served; any other gets 404 "model does not exist"
  broken="not-json" | "no-choices"   every 200 answer is a body that is not JSON / has no choices

Run standalone: `python tests/llm_server.py [--latency S]` prints the base URL and serves.
"""

from __future__ import annotations

import argparse
import email.parser
import itertools
import json
import re
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIRECTIVE = re.compile(r"\[\[(429|500|slow|400|nousage)(?::([\d.]+))?(?::([\d.]+))?\]\]")


KEY_ENV = "PHI1_TEST_LLM_KEY"  # the environment variable the tests hand the server's key through


def serve(monkeypatch, **kwargs):
    """Fixture body: a started server whose key sits in $KEY_ENV; stopped after the test."""
    srv = ScriptedLLMServer(**kwargs)
    srv.start()
    monkeypatch.setenv(KEY_ENV, srv.api_key or "no-auth")
    yield srv
    srv.stop()


def priced_book():
    """The real price books plus "test-model" at $1 / $2 per 1K tokens: large enough that a few
    words show up in the ledger."""
    from phi1lib import budget
    from phi1lib.budget.pricebook import LLMPrice

    book = budget.load_prices()
    book.llms["test-model"] = LLMPrice("test-model", 1.0, 2.0, "test fixture", None)
    return book


def prompt_text(body: dict) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    p = body.get("prompt", "")
    return p if isinstance(p, str) else "\n".join(map(str, p))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class ScriptedLLMServer:
    def __init__(self, api_key: str | None = "sk-test-local-key", *, latency_s: float = 0.0, batch_polls: int = 1,
                 model: str = "test-model", fail_share: tuple[int, int] | None = None, models=None,
                 broken: str | None = None):
        self.api_key = api_key
        self.fail_share = fail_share
        self.models = None if models is None else set(models)
        self.broken = broken
        self.latency_s = latency_s
        self.batch_polls = batch_polls  # GETs that report in_progress before a batch completes
        self.model = model
        self.log: list[dict] = []
        self.tries: Counter = Counter()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = None
        self._thread = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"srv": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- views for tests -------------------------------------------------------------------
    def paid(self) -> list[str]:
        """Prompt texts of requests answered with 200 (what a real API would bill)."""
        return [e["text"] for e in self.log if e["status"] == 200 and e["path"] != "files"]

    def bill(self, input_per_1k: float, output_per_1k: float) -> float:
        """Dollars a provider at these prices would bill for every 200 answer sent so far (repeats included)."""
        return sum(e.get("prompt_tokens", 0) * input_per_1k + e.get("completion_tokens", 0) * output_per_1k
                   for e in self.log if e["status"] == 200 and e["path"] != "files") / 1000.0

    def fails_for_good(self, text: str) -> bool:
        if self.fail_share is None:
            return False
        k, n = self.fail_share
        return zlib.crc32(text.encode("utf-8")) % n < k

    def new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids)}"

    # -- answering -------------------------------------------------------------------------
    def answer(self, body: dict, chat: bool) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) for one completion request; applies the directives."""
        text = prompt_text(body)
        with self._lock:
            self.tries[text] += 1
            tries = self.tries[text]
        headers: dict = {}
        if self.models is not None and body.get("model") not in self.models:
            return 404, headers, {"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                            "type": "NotFoundError", "code": 404}}
        if self.fails_for_good(text):
            headers["Retry-After"] = "0"
            return 500, headers, {"error": {"message": "scripted failure for good", "type": "server_error"}}
        for kind, a, b in DIRECTIVE.findall(text):
            if kind == "slow":
                time.sleep(float(a or 1))
            elif kind == "400":
                return 400, headers, {"error": {"message": "scripted bad request", "type": "invalid_request_error"}}
            elif kind == "429" and tries <= int(a or 1):
                headers["Retry-After"] = b or "1"
                return 429, headers, {"error": {"message": "scripted rate limit", "type": "rate_limit_exceeded"}}
            elif kind == "500" and tries <= int(a or 1):
                return 500, headers, {"error": {"message": "scripted server error", "type": "server_error"}}
        if self.latency_s:
            time.sleep(self.latency_s)
        out = "answer to: " + text
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        finish = "stop"
        cuts = [out.find(s) for s in stop if s and s in out]
        if cuts:
            out = out[: min(cuts)]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 10**9
        words = out.split(" ")
        if len(words) > max_tokens:
            out, finish = " ".join(words[:max_tokens]), "length"
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(out.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        rid = self.new_id("cmpl")
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": out}, "finish_reason": finish}
            resp = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": body.get("model"), "choices": [choice]}
        else:
            choice = {"index": 0, "text": out, "finish_reason": finish, "logprobs": None}
            resp = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": body.get("model"), "choices": [choice]}
        if "[[nousage]]" not in text:
            resp["usage"] = usage
        if self.broken == "no-choices":
            resp["choices"] = []
        elif self.broken == "not-json":
            return 200, headers, b"<html>upstream proxy error</html>"
        return 200, headers, resp

    def run_batch(self, batch: dict) -> None:
        """Answer every line of a batch's input file now; reveal it after `batch_polls` GETs."""
        out_lines, err_lines = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            status, _, body = self.answer(item["body"], chat=item["url"].endswith("chat/completions"))
            self.log.append({"t0": time.time(), "t1": time.time(), "path": "batch", "status": status,
                             "text": prompt_text(item["body"]), "batch": batch["id"]})
            row = {"id": self.new_id("batch_req"), "custom_id": item["custom_id"],
                   "response": {"status_code": status, "request_id": self.new_id("req"), "body": body}, "error": None}
            (out_lines if status == 200 else err_lines).append(json.dumps(row))
        batch["output_file_id"] = self._put_file("\n".join(out_lines).encode() + b"\n") if out_lines else None
        batch["error_file_id"] = self._put_file("\n".join(err_lines).encode() + b"\n") if err_lines else None
        batch["request_counts"] = {"total": len(out_lines) + len(err_lines), "completed": len(out_lines), "failed": len(err_lines)}

    def _put_file(self, data: bytes) -> str:
        fid = self.new_id("file")
        self.files[fid] = data
        return fid


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed-ACK stalls
    srv: ScriptedLLMServer

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body, headers=None, raw: bool = False) -> None:
        data = body if raw else json.dumps(body).encode()
        headers = dict(headers or {})
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/octet-stream" if raw else "application/json"))
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.srv.api_key is None or given == self.srv.api_key:  # api_key=None: a server without auth
            return True
        self.srv.log.append({"t0": time.time(), "t1": time.time(), "path": self.path, "status": 401, "text": ""})
        self._send(401, {"error": {"message": f"Incorrect API key provided: {given}.", "type": "invalid_request_error",
                                   "code": "invalid_api_key"}})
        return False

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        raw = self._body()
        if not self._authorized():
            return
        path = self.path.split("?")[0]
        srv = self.srv
        if path in ("/v1/chat/completions", "/v1/completions"):
            body = json.loads(raw)
            t0 = time.time()
            with srv._lock:
                srv.in_flight += 1
                srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            try:
                status, headers, resp = srv.answer(body, chat=path.endswith("chat/completions"))
            finally:
                with srv._lock:
                    srv.in_flight -= 1
            entry = {"t0": t0, "t1": time.time(), "path": path, "status": status, "text": prompt_text(body)}
            if isinstance(resp, dict):
                entry.update({k: v for k, v in (resp.get("usage") or {}).items() if k != "total_tokens"})
            srv.log.append(entry)
            if isinstance(resp, bytes):
                return self._send(status, resp, {**headers, "Content-Type": "application/json"}, raw=True)
            return self._send(status, resp, headers)
        if path == "/v1/files":
            msg = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            data, purpose, name = b"", "", "input.jsonl"
            for part in msg.get_payload():
                field = part.get_param("name", header="content-disposition")
                if field == "file":
                    data = part.get_payload(decode=True)
                    name = part.get_filename() or name
                elif field == "purpose":
                    purpose = part.get_payload(decode=True).decode()
            fid = srv._put_file(data)
            srv.log.append({"t0": time.time(), "t1": time.time(), "path": "files", "status": 200, "text": fid})
            return self._send(200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                    "filename": name, "purpose": purpose or "batch", "status": "processed"})
        if path == "/v1/batches":
            body = json.loads(raw)
            if body.get("input_file_id") not in srv.files:
                return self._send(400, {"error": {"message": "unknown input_file_id"}})
            batch = {"id": srv.new_id("batch"), "object": "batch", "endpoint": body["endpoint"],
                     "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                     "status": "validating", "created_at": int(time.time()), "polls": 0,
                     "metadata": body.get("metadata")}
            srv.run_batch(batch)
            srv.batches[batch["id"]] = batch
            return self._send(200, _public(batch))
        return self._send(404, {"error": {"message": f"no route {path}"}})

    def do_GET(self):
        if not self._authorized():
            return
        path = self.path.split("?")[0]
        srv = self.srv
        if path == "/v1/batches":
            data = [_public(b) for b in reversed(list(srv.batches.values()))]
            return self._send(200, {"object": "list", "data": data, "has_more": False,
                                    "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
        m = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if m and m.group(1) in srv.batches:
            batch = srv.batches[m.group(1)]
            batch["polls"] += 1
            batch["status"] = "completed" if batch["polls"] > srv.batch_polls else "in_progress"
            return self._send(200, _public(batch))
        m = re.fullmatch(r"/v1/files/([\w-]+)/content", path)
        if m and m.group(1) in srv.files:
            return self._send(200, srv.files[m.group(1)], raw=True)
        return self._send(404, {"error": {"message": f"no route {path}"}})


def _public(batch: dict) -> dict:
    shown = {k: v for k, v in batch.items() if k != "polls"}
    if shown["status"] != "completed":
        shown["output_file_id"] = shown["error_file_id"] = None
    return shown


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each answer takes")
    ap.add_argument("--key", default="sk-test-local-key")
    args = ap.parse_args()
    server = ScriptedLLMServer(args.key, latency_s=args.latency)
    print(server.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
