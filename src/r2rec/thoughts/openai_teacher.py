"""``openai:<model>``: a teacher behind any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, hosted APIs).

- endpoint: ``base_url`` from the config, else ``$R2REC_OPENAI_BASE_URL``, else ``https://api.openai.com/v1``;
- key: ``$R2REC_OPENAI_API_KEY`` or ``$OPENAI_API_KEY`` (optional for local servers). It is sent in the
  Authorization header only: never logged, never written, never part of the cache key or of an error;
- ``concurrency`` requests in flight (thread pool over one pooled ``httpx.Client``), a timeout per request;
- retries with exponential backoff (+ jitter, ``Retry-After`` honoured) on connection errors, timeouts,
  5xx and 429; any other 4xx fails at once (retrying a bad request only costs money);
- a resumable on-disk cache: JSONL keyed by the sha256 of the request (model, messages, sampling settings),
  one line appended, flushed and fsynced per response as it arrives. A rerun answers every cached request
  from disk, so an interrupted run loses nothing and repeats no paid call. Identical requests within a run
  are sent once. A torn last line (killed mid-write) is ignored on load.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, cast

import httpx

from r2rec.io import JsonlLog, fingerprint
from r2rec.thoughts.progressive import HopRequest, teacher_messages
from r2rec.thoughts.teachers import Teacher, TeacherOptions

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_ERRORS = (httpx.TransportError,)  # connect/read/write errors, timeouts, dropped connections


class TeacherError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted). Completed answers stay cached."""


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


class OpenAIChat:
    """Chat completions against one endpoint, with retries and the cache (usable outside the teacher too)."""

    def __init__(self, model: str, options: TeacherOptions | None = None, cache_path: str | Path | None = None):
        self.model = model
        self.options = options or TeacherOptions()
        self.base_url = (self.options.base_url or os.environ.get("R2REC_OPENAI_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        key = os.environ.get("R2REC_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=max(1, self.options.concurrency))
        self.client = httpx.Client(base_url=self.base_url, headers=headers, limits=limits,
                                   timeout=httpx.Timeout(self.options.timeout_s))
        self.cache = ResponseCache(cache_path)
        self.calls = 0  # HTTP attempts made by this instance (tests and logs)
        self.retries = 0
        self._rng = random.Random(self.options.seed)
        self._count_lock = threading.Lock()

    def payload(self, messages: list[dict]) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": self.options.max_tokens,
                "temperature": self.options.temperature, "seed": self.options.seed}

    def complete_many(self, messages_list: Sequence[list[dict]]) -> list[str]:
        payloads = [self.payload(m) for m in messages_list]
        keys = [request_key(p) for p in payloads]
        todo = {k: p for k, p in zip(keys, payloads) if self.cache.get(k) is None}  # dedupes identical requests
        if todo:
            workers = max(1, min(self.options.concurrency, len(todo)))
            with ThreadPoolExecutor(workers, thread_name_prefix="openai") as pool:
                futures = [pool.submit(self._fetch, k, p) for k, p in todo.items()]
                errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                raise errors[0]
        return cast("list[str]", [self.cache.get(k) for k in keys])  # every key is cached by now

    def _fetch(self, key: str, payload: dict) -> None:
        self.cache.put(key, self._post(payload))

    def _post(self, payload: dict) -> str:
        opts = self.options
        for attempt in range(opts.max_retries + 1):
            retry_after = None
            with self._count_lock:
                self.calls += 1
            try:
                resp = self.client.post("/chat/completions", json=payload)
            except _RETRY_ERRORS as e:
                problem = f"{type(e).__name__}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise TeacherError(f"{self.base_url}: malformed chat completion response") from None
                problem = f"HTTP {resp.status_code}"
                if resp.status_code not in _RETRY_STATUS:
                    raise TeacherError(f"{self.base_url}/chat/completions: {problem}: {resp.text[:200]}")
                retry_after = resp.headers.get("retry-after")
            if attempt == opts.max_retries:
                raise TeacherError(f"{self.base_url}/chat/completions: {problem} after {attempt + 1} attempts "
                                   f"(completed answers are cached: rerun to resume)")
            with self._count_lock:
                self.retries += 1
                jitter = self._rng.uniform(0, 0.25)
            delay = min(60.0, opts.backoff_s * 2 ** attempt) * (1 + jitter)
            if retry_after:
                try:
                    delay = max(delay, float(retry_after))
                except ValueError:
                    pass
            time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()
        self.cache.close()


class OpenAITeacher(Teacher):
    def __init__(self, model: str, options: TeacherOptions | None = None, cache_dir: str | Path | None = None):
        self.name = f"openai:{model}"
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in model)
        cache_path = Path(cache_dir) / f"openai-{slug}.jsonl" if cache_dir else None
        self.chat = OpenAIChat(model, options, cache_path)

    def write(self, requests: Sequence[HopRequest]) -> list[str]:
        return self.chat.complete_many([teacher_messages(r) for r in requests])

    def close(self) -> None:
        self.chat.close()
