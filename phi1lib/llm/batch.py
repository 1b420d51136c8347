"""OpenAI Batch API through the same store: write JSONL, upload, submit, poll, merge; priced with the batch discount.

    runner = BatchRunner(client)            # client: an LLMClient over an OpenAIProvider
    results = runner.generate(requests)     # submits what is missing, polls, returns in order

Resumable: every submitted batch is recorded in the store (before and after `batches.create`,
so a kill in between is recovered by matching the uploaded file id), and a rerun polls the
open batches instead of paying for them again. Answers merge into the store like any other.
"""

from __future__ import annotations

import io
import json
import time
from typing import Iterable

from ..errors import ConfigError, DataError
from .client import LLMClient, Request, Result, _result_from_row
from .providers import OpenAIProvider, ProviderError, parse_response

FINAL = {"completed", "failed", "expired", "cancelled"}


class BatchRunner:
    """Runs requests through the Batch API of the client's OpenAI-compatible provider."""

    def __init__(self, client: LLMClient, *, max_per_batch: int = 50_000, completion_window: str = "24h"):
        if not isinstance(client.provider, OpenAIProvider):
            raise ConfigError(f"BatchRunner needs an LLMClient over an OpenAIProvider, got {client.provider!r}")
        if int(max_per_batch) < 1:
            raise ConfigError(f"max_per_batch must be >= 1 (OpenAI allows 50,000), got {max_per_batch!r}")
        self.client = client
        self.provider: OpenAIProvider = client.provider
        self.api = client.provider.client
        self.max_per_batch = int(max_per_batch)
        self.completion_window = completion_window
        self.inputs_dir = client.store.path.parent / "batch_inputs"

    def _call(self, what: str, fn, *args, **kwargs):
        """An API call whose errors come back redacted, without the openai exception attached."""
        import openai

        try:
            return fn(*args, **kwargs)
        except openai.OpenAIError as exc:
            raise ProviderError(self.provider.redact(f"Batch API {what} failed: {type(exc).__name__}: {exc}")) from None

    # -- submit ----------------------------------------------------------------------------
    def outstanding_usd(self) -> float:
        """Worst-case cost held by batches submitted but not merged yet."""
        return sum(b["reserved_usd"] for b in self.client.store.batches(open_only=True))

    def submit(self, requests: Iterable[Request]) -> list[str]:
        """Submit the requests that are neither stored nor in an open batch; returns new batch ids."""
        requests = list(requests)
        keys = self.client._keys(requests)
        self.recover()
        stored = self.client.store.get_ok(set(keys))
        pending = {k for b in self.client.store.batches(open_only=True) for k in b["keys"]}
        todo: dict[str, Request] = {}
        for k, r in zip(keys, requests):
            if k not in stored and k not in pending:
                todo.setdefault(k, r)
        by_endpoint: dict[str, list[tuple[str, dict]]] = {}
        worst: dict[str, float] = {}
        for k, r in todo.items():
            endpoint, body = self.provider.request_body(r)
            by_endpoint.setdefault(endpoint, []).append((k, body))
            worst[k] = self.client.price(self.client.counter.upper_bound(r), r.max_tokens, batch=True)
        ids = []
        for endpoint, items in by_endpoint.items():
            for start in range(0, len(items), self.max_per_batch):
                chunk = items[start : start + self.max_per_batch]
                ids.append(self._submit_chunk(endpoint, chunk, sum(worst[k] for k, _ in chunk)))
        return ids

    def _submit_chunk(self, endpoint: str, chunk: list[tuple[str, dict]], reserved: float) -> str:
        what = f"a batch of {len(chunk)} requests (worst case, batch prices)"
        self.client.check_budget(reserved, what, committed=self.outstanding_usd())
        lines = [json.dumps({"custom_id": k, "method": "POST", "url": endpoint, "body": body}, ensure_ascii=False)
                 for k, body in chunk]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        local = self.inputs_dir / f"{int(time.time() * 1000)}-{chunk[0][0][:12]}.jsonl"
        local.write_bytes(data)  # kept for audit; the key is not in it
        uploaded = self._call("file upload", self.api.files.create, file=(local.name, io.BytesIO(data)), purpose="batch")
        keys = [k for k, _ in chunk]
        # Record the intent first: a kill between create() and the rename is recovered by
        # finding the batch for this input file (recover()), so it is never submitted twice.
        placeholder = f"pending:{uploaded.id}"
        self.client.store.add_batch(placeholder, input_file_id=uploaded.id, model=self.provider.model,
                                    endpoint=endpoint, keys=keys, reserved_usd=reserved)
        batch = self._call("create", self.api.batches.create, input_file_id=uploaded.id, endpoint=endpoint,
                           completion_window=self.completion_window, metadata={"phi1_stage": self.client.stage})
        self.client.store.rename_batch(placeholder, batch.id)
        return batch.id

    def recover(self) -> None:
        """Adopt batches created by a run killed before it could record their id; resubmit the rest."""
        for b in self.client.store.batches(open_only=True):
            if not b["batch_id"].startswith("pending:"):
                continue
            found = None
            for remote in self._call("list", self.api.batches.list, limit=100):
                if remote.input_file_id == b["input_file_id"]:
                    found = remote
                    break
            if found is None:
                found = self._call("create", self.api.batches.create, input_file_id=b["input_file_id"],
                                   endpoint=b["endpoint"], completion_window=self.completion_window,
                                   metadata={"phi1_stage": self.client.stage})
            self.client.store.rename_batch(b["batch_id"], found.id)

    # -- poll and merge --------------------------------------------------------------------
    def poll(self, requests: dict[str, Request] | None = None) -> dict[str, str]:
        """Check every open batch once; merge the finished ones. Returns {batch_id: status}."""
        statuses = {}
        for b in self.client.store.batches(open_only=True):
            if b["batch_id"].startswith("pending:"):
                continue
            remote = self._call("retrieve", self.api.batches.retrieve, b["batch_id"])
            statuses[b["batch_id"]] = remote.status
            if remote.status in FINAL:
                self._merge(b, remote, requests or {})
        self.client.flush_ledger(batch=True)
        return statuses

    def _lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._call("download", self.api.files.content, file_id).text
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"Batch API file {file_id} line {n} is not JSON; rerun poll() to download it again") from None
        return rows

    def _merge(self, b: dict, remote, requests: dict[str, Request]) -> None:
        seen = set()
        for row in self._lines(remote.output_file_id) + self._lines(getattr(remote, "error_file_id", None)):
            key = row.get("custom_id")
            if key not in b["keys"] or key in seen:
                continue
            seen.add(key)
            resp = row.get("response") or {}
            code = resp.get("status_code")
            req = requests.get(key)
            if code == 200:
                try:
                    self.client._settle(key, req, parse_response(resp.get("body") or {}, b["endpoint"]), 1, batch=True)
                    continue
                except ProviderError as exc:
                    err = str(exc)
            else:
                body_err = ((resp.get("body") or {}).get("error") or row.get("error") or {})
                err = f"HTTP {code}: {body_err.get('message', body_err) if isinstance(body_err, dict) else body_err}"
            self.client._fail(key, req, f"batch {b['batch_id']}: {err}", 1)
        for key in b["keys"]:
            if key not in seen:
                self.client._fail(key, requests.get(key), f"batch {b['batch_id']} ended '{remote.status}' without this request", 1)
        self.client.store.set_batch_status(b["batch_id"], remote.status, finished=True)

    # -- all together ----------------------------------------------------------------------
    def generate(self, requests: Iterable[Request], *, poll_s: float = 30.0, timeout_s: float | None = None) -> list[Result]:
        """Submit what is missing, poll until our batches finish (or `timeout_s`), return results in order.

        A request still in a running batch at the timeout comes back ok=False with an error
        saying so (it is not stored as failed): call again later to collect it.
        """
        requests = list(requests)
        keys = self.client._keys(requests)
        before = self.client.store.get_ok(set(keys))
        self.submit(requests)
        by_key = dict(zip(keys, requests))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.poll(by_key)
            open_ids = {b["batch_id"]: b for b in self.client.store.batches(open_only=True) if set(b["keys"]) & set(keys)}
            if not open_ids or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(poll_s)
        waiting = {k: bid for bid, b in open_ids.items() for k in b["keys"]}
        stored = self.client.store.get_ok(set(keys))
        out = []
        for k, r in zip(keys, requests):
            if k in stored:
                res = _result_from_row(stored[k], r)
                if k not in before:  # merged by this call: report what it cost
                    res.cached, res.usd = False, stored[k]["usd"]
                out.append(res)
            elif k in waiting:
                out.append(Result(k, "", False, f"still running in batch {waiting[k]}; call again to collect", 0, 0, 0.0, False, r))
            else:
                row = self.client.store.get(k) or {}
                out.append(Result(k, "", False, row.get("error") or "no answer", 0, 0, 0.0, False, r))
        return out
