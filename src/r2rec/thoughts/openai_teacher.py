"""``openai:<model>``: a teacher behind any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, hosted APIs).

- endpoint: ``base_url`` from the config, else ``$R2REC_OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
  Several URLs separated by spaces make a fleet of servers of the same model: each request goes to the one with
  the fewest requests in flight (ties in turn), and a retry goes to the next one. One llama.cpp server
  (llama-cpp-python) answers one request at a time, so a fleet of them is how requests run in parallel there
  (bench/bench_teacher.py);
- key: ``$R2REC_OPENAI_API_KEY`` or ``$OPENAI_API_KEY`` (optional for local servers). It is sent in the
  Authorization header only: never logged, never written, never part of the cache key or of an error. A
  token in ``base_url`` (``https://user:token@host/v1``, ``...?key=...``) is used as given but redacted
  (:func:`r2rec.errors.redact`) from every message and file, and so is the key when a server echoes it;
- at most ``concurrency`` requests in flight over the whole fleet (a thread pool of that size over one pooled
  ``httpx.Client`` per endpoint), a timeout per request;
- retries with exponential backoff (+ jitter, ``Retry-After`` honoured) on every transient fault: connection
  errors, timeouts, 5xx, 408/409/425/429, and a 200 whose body is not a chat completion (not JSON, no
  ``choices``); any other 4xx fails at once (retrying a bad request only costs money). A request whose retries
  run out is a :class:`TeacherError` with ``transient=True``: :meth:`OpenAIChat.complete_many` with
  ``partial=True`` answers ``None`` for it and goes on with the others (the thoughts stage then finishes what it
  can and asks for a rerun);
- a resumable on-disk cache: JSONL keyed by the sha256 of the request (model, messages, sampling settings),
  one line appended, flushed and fsynced per response as it arrives. A rerun answers every cached request
  from disk, so an interrupted run loses nothing and repeats no paid call. Identical requests within a run
  are sent once. A torn last line (killed mid-write) is ignored on load.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from r2rec.errors import redact
from r2rec.io import JsonlLog, fingerprint
from r2rec.thoughts.progressive import HopRequest, teacher_messages
from r2rec.thoughts.teachers import Teacher, TeacherError, TeacherOptions

__all__ = ["OpenAIChat", "OpenAITeacher", "ResponseCache", "TeacherError", "request_key", "split_base_url"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx
_RETRY_ERRORS = (httpx.TransportError,)  # connect/read/write errors, timeouts, dropped connections


class _RedactFilter(logging.Filter):
    """Redacts credentials from the records of the HTTP libraries (they log request URLs at DEBUG/INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, _RedactFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_RedactFilter())


def split_base_url(url: str) -> tuple[str, dict[str, str]]:
    """``(url without its query, query parameters)``: httpx would append request paths after a base URL's query,
    so the parameters (e.g. ``?key=...``) go with every request instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment="")).rstrip("/"), dict(parse_qsl(parts.query))


def request_key(payload: dict) -> str:
    return fingerprint(payload, ensure_ascii=False)


class ResponseCache:
    """Append-only JSONL ``{"key", "text"}`` (a :class:`r2rec.io.JsonlLog`: every append is flushed and fsynced,
    a torn last line is dropped on load); thread-safe. ``path=None``: in memory only."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._log = JsonlLog(self.path) if self.path is not None else None
        self.entries: dict[str, str] = {r["key"]: r["text"] for r in self._log.rows} if self._log else {}

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, text: str) -> None:
        with self._lock:
            if key in self.entries:
                return
            self.entries[key] = text
            if self._log is not None:
                self._log.append({"key": key, "text": text})

    def __len__(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


@dataclass
class _Endpoint:
    base_url: str
    display_url: str  # redacted
    client: httpx.Client
    in_flight: int = 0


class OpenAIChat:
    """Chat completions against one endpoint or a fleet, with retries and the cache (usable outside the teacher)."""

    def __init__(self, model: str, options: TeacherOptions | None = None, cache_path: str | Path | None = None):
        self.model = model
        self.options = options or TeacherOptions()
        urls = (self.options.base_url or os.environ.get("R2REC_OPENAI_BASE_URL") or DEFAULT_BASE_URL).split()
        if not urls:
            raise ValueError("teacher_options.base_url: empty; give one URL, or several separated by spaces")
        key = os.environ.get("R2REC_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        found: list[str | None] = [key]
        for url in urls:
            found += [*split_base_url(url)[1].values(), urlsplit(url).password]
        self._secrets = [s for s in found if s]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=max(1, self.options.concurrency))
        self.endpoints: list[_Endpoint] = []
        for url in urls:
            base, params = split_base_url(url)
            client = httpx.Client(
                base_url=base,
                params=params,
                headers=headers,
                limits=limits,
                timeout=httpx.Timeout(self.options.timeout_s),
            )
            self.endpoints.append(_Endpoint(base, self.redact(base), client))
        self.base_url = self.endpoints[0].base_url
        self.client = self.endpoints[0].client
        self.display_url = " ".join(e.display_url for e in self.endpoints)  # what messages show
        self.cache = ResponseCache(cache_path)
        self.calls = 0  # HTTP attempts made by this instance (tests and logs)
        self.retries = 0
        self.failed = 0  # requests given up after their retries (complete_many(partial=True))
        self.last_error = ""
        self.latencies: list[float] = []  # seconds of each answered request's last attempt (benchmarks)
        self.max_in_flight = 0  # the most requests this instance had in flight at once
        self._turn = 0
        self._rng = random.Random(self.options.seed)
        self._count_lock = threading.Lock()

    def redact(self, text: str) -> str:
        """``text`` without the key, the URL's credentials or anything key-shaped."""
        return redact(text, self._secrets)

    def payload(self, messages: list[dict]) -> dict:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.options.max_tokens,
            "temperature": self.options.temperature,
            "seed": self.options.seed,
        }

    def complete_many(self, messages_list: Sequence[list[dict]], partial: bool = False) -> list[str | None]:
        """The answer to each request, in order (cached ones from disk, identical ones sent once).

        A request that fails for good raises its :class:`TeacherError` after the others finished (their answers
        are cached). With ``partial``, a request whose retries ran out (``transient``) answers ``None`` instead
        and :attr:`failed` counts it; a non-retryable failure (a 401, a bad request) still raises."""
        payloads = [self.payload(m) for m in messages_list]
        keys = [request_key(p) for p in payloads]
        todo = {k: p for k, p in zip(keys, payloads) if self.cache.get(k) is None}  # dedupes identical requests
        if todo:
            workers = max(1, min(self.options.concurrency, len(todo)))
            with ThreadPoolExecutor(workers, thread_name_prefix="openai") as pool:
                futures = [pool.submit(self._fetch, k, p) for k, p in todo.items()]
                errors = [e for f in futures if (e := f.exception()) is not None]
            fatal = [e for e in errors if not (partial and isinstance(e, TeacherError) and e.transient)]
            if fatal:
                raise fatal[0]
            if errors:
                self.failed += len(errors)
                self.last_error = str(errors[-1])
        return [self.cache.get(k) for k in keys]

    def _fetch(self, key: str, payload: dict) -> None:
        self.cache.put(key, self._post(payload))

    def _acquire(self, avoid: _Endpoint | None) -> _Endpoint:
        """The endpoint with the fewest requests in flight (ties: in turn; a retry avoids the one that failed)."""
        with self._count_lock:
            n = len(self.endpoints)
            order = [self.endpoints[(self._turn + k) % n] for k in range(n)]
            self._turn += 1
            if avoid is not None and n > 1:
                order.remove(avoid)
            ep = min(order, key=lambda e: e.in_flight)
            ep.in_flight += 1
            self.calls += 1
            self.max_in_flight = max(self.max_in_flight, sum(e.in_flight for e in self.endpoints))
            return ep

    def _release(self, ep: _Endpoint) -> None:
        with self._count_lock:
            ep.in_flight -= 1

    def _post(self, payload: dict) -> str:
        opts = self.options
        ep = None
        for attempt in range(opts.max_retries + 1):
            retry_after = None
            ep = self._acquire(ep)
            t0 = time.perf_counter()
            try:
                resp = ep.client.post("/chat/completions", json=payload)
            except _RETRY_ERRORS as e:
                problem = f"{type(e).__name__}"
            else:
                if resp.status_code == 200:
                    text = _content(resp)
                    if text is not None:
                        with self._count_lock:
                            self.latencies.append(time.perf_counter() - t0)
                        return text
                    problem = "HTTP 200 with a malformed body (not a chat completion)"
                else:
                    problem = f"HTTP {resp.status_code}"
                    if resp.status_code not in _RETRY_STATUS and resp.status_code < 500:
                        body = " ".join(resp.text[:200].split())
                        raise TeacherError(f"{ep.display_url}/chat/completions: {problem}: {self.redact(body)}")
                    retry_after = resp.headers.get("retry-after")
            finally:
                self._release(ep)
            if attempt == opts.max_retries:
                raise TeacherError(
                    f"{ep.display_url}/chat/completions: {problem} after {attempt + 1} attempts "
                    f"(completed answers are cached: rerun to resume)",
                    transient=True,
                )
            with self._count_lock:
                self.retries += 1
                jitter = self._rng.uniform(0, 0.25)
            delay = min(60.0, opts.backoff_s * 2**attempt) * (1 + jitter)
            if retry_after:
                try:
                    delay = max(delay, float(retry_after))
                except ValueError:
                    pass
            time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for ep in self.endpoints:
            ep.client.close()
        self.cache.close()


def _content(resp: httpx.Response) -> str | None:
    """The message text of a chat completion response, or None when the body is not one."""
    try:
        text = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else "" if text is None else None


class OpenAITeacher(Teacher):
    def __init__(self, model: str, options: TeacherOptions | None = None, cache_dir: str | Path | None = None):
        self.name = f"openai:{model}"
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in model)
        cache_path = Path(cache_dir) / f"openai-{slug}.jsonl" if cache_dir else None
        self.chat = OpenAIChat(model, options, cache_path)

    def write(self, requests: Sequence[HopRequest]) -> list[str | None]:
        """One thought per request; ``None`` for a request whose retries ran out (:attr:`failed` counts them)."""
        try:
            return self.chat.complete_many([teacher_messages(r) for r in requests], partial=True)
        finally:
            self.failed, self.last_error = self.chat.failed, self.chat.last_error

    def close(self) -> None:
        self.chat.close()
