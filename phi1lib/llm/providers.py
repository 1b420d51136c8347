"""LLM providers behind one interface: OpenAI-compatible HTTP endpoints and offline Python functions.

A provider turns one `Request` into a `Completion` or raises `ProviderError` saying whether a
retry may help. Retrying, caching, pricing and rate limits live in `phi1lib.llm`, not here.
The local `transformers` provider is in `phi1lib.llm_local`.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, MissingDependency
from .limits import parse_retry_after


@dataclass
class Completion:
    """One answer as the provider reported it; token counts are None when it reported none."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    """A failed call. `retryable`: 429/5xx/timeouts; `fatal`: no request can succeed (bad key, dead
    endpoint, unknown model), so the whole run stops at once, naming the endpoint and the fix."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, fatal: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.fatal = fatal


def check_base_url(base_url: str | None) -> None:
    """A base URL must carry its scheme and host (http://host:port/v1): without them every request
    would fail as a connection error after all its retries."""
    if base_url is None:
        return
    from urllib.parse import urlsplit

    parts = urlsplit(str(base_url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        guess = f"http://{base_url}" if "://" not in str(base_url) else "http://HOST:PORT/v1"
        raise ConfigError(f"base URL {base_url!r} is not an http(s) URL; give it with its scheme, e.g. {guess} "
                          "(--base-url)")


def _unreachable(exc: BaseException) -> str | None:
    """'connection refused' / 'unknown host' when a connection error cannot be fixed by retrying."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror):
            return "unknown host"
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        text = str(exc).lower()
        if "connection refused" in text:
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
            return "unknown host"
        exc = exc.__cause__ or exc.__context__
    return None


def redact(text: str, secrets) -> str:
    """Replace every secret (an API key) in `text` with ***."""
    text = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class OpenAIProvider:
    """Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, TGI) through the `openai` package.

    The key is read from the environment variable `api_key_env` when the provider is built,
    so a missing key fails before any work starts. Use `api_key_env=None` for local servers
    that need no key. The `openai` client's own retries are off: `LLMClient` owns backoff.
    """

    kind = "openai"
    batch_size = None  # one HTTP call per request; the client runs them concurrently

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str | None = "OPENAI_API_KEY", *,
                 timeout_s: float = 120.0, max_tokens_param: str = "max_tokens", extra_body: dict | None = None,
                 price_model: str | None = None):
        if not model or not isinstance(model, str):
            raise ConfigError(f"OpenAIProvider: model must be a model name string, got {model!r}")
        check_base_url(base_url)
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_tokens_param = max_tokens_param  # newer OpenAI models want "max_completion_tokens"
        self.extra_body = dict(extra_body or {})
        self.price_model = price_model or model  # the price-book name (a vLLM alias may differ)
        if api_key_env is None:
            key = "EMPTY"  # local servers accept any bearer token
        else:
            key = os.environ.get(api_key_env, "")
            if not key.strip():
                where = f" for {base_url}" if base_url else ""
                raise ConfigError(
                    f"environment variable ${api_key_env} is empty or unset; export your API key{where} there, "
                    "or name another variable with --api-key-env VAR (--api-key-env none for a server without "
                    "auth; api_key_env= in Python)"
                )
        self._secrets = (key,)
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise MissingDependency("the OpenAI provider needs the openai package: pip install openai") from exc
        self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=self.timeout_s)

    @property
    def cache_id(self) -> str:
        # Independent of base_url: the same model behind another URL gives the same answers.
        return f"openai:{self.model}"

    @property
    def client(self):
        """The underlying openai.OpenAI client (for the Batch API)."""
        return self._client

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages."""
        return self.base_url or "https://api.openai.com/v1"

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def request_body(self, request) -> tuple[str, dict[str, Any]]:
        """(endpoint path, JSON body) for a request: used by calls and by Batch API input files."""
        body: dict[str, Any] = {"model": self.model, self.max_tokens_param: request.max_tokens,
                                "temperature": request.temperature, "top_p": request.top_p}
        if request.stop:
            body["stop"] = list(request.stop)
        body.update(self.extra_body)
        if request.messages is not None:
            body["messages"] = request.messages
            return "/v1/chat/completions", body
        body["prompt"] = request.prompt
        return "/v1/completions", body

    def call(self, request) -> Completion:
        import openai

        endpoint, body = self.request_body(request)
        kwargs = {k: v for k, v in body.items() if k in ("model", "messages", "prompt", "max_tokens", "temperature", "top_p", "stop", "max_completion_tokens")}
        extra = {k: v for k, v in body.items() if k not in kwargs}
        try:
            if endpoint == "/v1/chat/completions":
                resp = self._client.chat.completions.create(**kwargs, extra_body=extra or None)
            else:
                resp = self._client.completions.create(**kwargs, extra_body=extra or None)
        except openai.APIStatusError as exc:
            status = exc.status_code
            detail = re.sub(r"^Error code: \d+ - ", "", str(exc.message))  # the status is said once, first
            msg = self.redact(f"HTTP {status} from {self.endpoint}: {detail}")
            fix = {401: "check the API key in the variable --api-key-env names (and --base-url)",
                   403: "check the API key's permissions for this model (and --base-url)",
                   404: f"check --model {self.model} against the server's models (GET {self.endpoint}/models) and "
                        "that --base-url ends in /v1"}.get(status)
            # `from None`: the openai exception (and its request/response) stays out of tracebacks.
            raise ProviderError(msg + (f"; {fix}" if fix else ""), status=status,
                                retryable=status in (408, 409, 429) or status >= 500,
                                retry_after=parse_retry_after(exc.response.headers), fatal=fix is not None) from None
        except openai.APITimeoutError:
            raise ProviderError(f"timed out after {self.timeout_s:g} s", retryable=True) from None
        except openai.APIConnectionError as exc:
            why = _unreachable(exc)
            if why is not None:
                raise ProviderError(f"cannot reach {self.endpoint}: {why}; start the server there or fix --base-url",
                                    fatal=True) from None
            raise ProviderError(self.redact(f"connection error to {self.endpoint}: {exc}"), retryable=True) from None
        except ValueError as exc:  # a body that is not JSON
            raise ProviderError(self.redact(f"the reply from {self.endpoint} is not an OpenAI-compatible response "
                                            f"({type(exc).__name__}: {str(exc)[:80]}); is --base-url the server's "
                                            "OpenAI API (ending in /v1)?")) from None
        body = resp.model_dump() if hasattr(resp, "model_dump") else resp
        if not isinstance(body, dict):
            raise ProviderError(f"the reply from {self.endpoint} is not an OpenAI-compatible response "
                                f"({type(body).__name__}: {str(body)[:80]}); is --base-url the server's OpenAI API?")
        return parse_response(body, endpoint)


def parse_response(body: dict, endpoint: str) -> Completion:
    """A Completion from a chat or completions response body (also used for Batch API output)."""
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        raise ProviderError(f"the reply has no choices (a malformed answer: {str(body)[:120]})")
    choice = choices[0]
    if endpoint.endswith("chat/completions"):
        text = (choice.get("message") or {}).get("content")
    else:
        text = choice.get("text")
    if text is None:
        raise ProviderError(f"response has no text (finish_reason={choice.get('finish_reason')!r})")
    usage = body.get("usage") or {}
    return Completion(text=text, prompt_tokens=usage.get("prompt_tokens"),
                      completion_tokens=usage.get("completion_tokens"), finish_reason=choice.get("finish_reason"))


class FunctionProvider:
    """A Python function standing in for an LLM (offline runs, tests): `fn(request) -> str`, priced at $0.

    `fn` may also return a dict with `text` and optionally `prompt_tokens`, `completion_tokens`.
    An exception from `fn` becomes a failed Result (not retried) carrying the exception text.
    """

    kind = "function"
    batch_size = None
    price_model = None  # free
    endpoint = "a Python function"

    def __init__(self, fn: Callable[[Any], Any], name: str):
        if not callable(fn):
            raise ConfigError(f"FunctionProvider: fn must be callable, got {type(fn).__name__}")
        if not name or not isinstance(name, str):
            raise ConfigError(f"FunctionProvider: name must be a non-empty string (it is part of the cache key), got {name!r}")
        self.fn = fn
        self.name = name
        self.model = name

    @property
    def cache_id(self) -> str:
        return f"function:{self.name}"

    def __repr__(self) -> str:
        return f"FunctionProvider(name={self.name!r})"

    def redact(self, text: str) -> str:
        return text

    def call(self, request) -> Completion:
        try:
            out = self.fn(request)
        except Exception as exc:  # the stand-in's failure is this request's failure
            raise ProviderError(f"{self.name} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, Completion):
            return out
        if isinstance(out, dict) and isinstance(out.get("text"), str):
            return Completion(out["text"], out.get("prompt_tokens"), out.get("completion_tokens"), out.get("finish_reason", "stop"))
        if isinstance(out, str):
            return Completion(out, finish_reason="stop")
        raise ProviderError(f"{self.name} returned {type(out).__name__}, expected str or dict with 'text'")
