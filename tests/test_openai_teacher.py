"""The openai: teacher against OpenAI-compatible servers on loopback, behind a proxy that injects faults.

Two upstreams: a tiny in-process fake (always available, fast) and a real llama.cpp server serving the
SmolLM2 GGUF (skipped only when ``llama_cpp`` is not importable). The proxy drops connections and answers
5xx/429/400 on command, and counts what reaches the upstream, so "no lost and no duplicated trace" and
"resume repeats no call" are measured, not assumed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from r2rec.thoughts.openai_teacher import OpenAIChat, ResponseCache, TeacherError
from r2rec.thoughts.teachers import TeacherOptions


# -- loopback servers ----------------------------------------------------------------------------------
class _Server:
    def __init__(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _answer(messages: list[dict]) -> str:
    return "echo " + hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:12]


class _FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        owner = self.server.owner
        with owner.lock:
            owner.calls += 1
            owner.auth.append(self.headers.get("Authorization"))
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": _answer(body["messages"])}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())


class FakeUpstream(_Server):
    def __init__(self):
        self.lock, self.calls, self.auth = threading.Lock(), 0, []
        super().__init__(_FakeHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        p = self.server.owner
        with p.lock:
            p.received += 1
            action = p.schedule.pop(0) if p.schedule else "forward"
            if action == "forward" and p.fail_after is not None and p.forwarded >= p.fail_after:
                action = "500"
            if action == "forward":
                p.forwarded += 1
        if action == "drop":  # close the socket without a response: the client sees a dropped connection
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action.isdigit():  # an injected status: 500, 503, 429, 400, ...
            body = b'{"error": "injected"}'
            self.send_response(int(action))
            self.send_header("Content-Length", str(len(body)))
            if action == "429":
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(body)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        r = httpx.post(p.upstream + self.path, content=raw, headers=headers, timeout=120)
        if r.status_code != 200:  # a real failure upstream is not an injected one: count it back out
            with p.lock:
                p.forwarded -= 1
        self.send_response(r.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)


class FaultProxy(_Server):
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.lock = threading.Lock()
        self.schedule: list[str] = []  # actions for the next requests: drop, 500, 429, 400, forward
        self.fail_after: int | None = None  # after this many forwarded requests, answer 500 forever
        self.received = self.forwarded = 0
        super().__init__(_ProxyHandler)


@pytest.fixture
def fake():
    up = FakeUpstream()
    proxy = FaultProxy(up.url)
    yield up, proxy
    proxy.close()
    up.close()


def _chat(proxy, tmp_path, **kw) -> OpenAIChat:
    opts = TeacherOptions(base_url=proxy.url + "/v1", backoff_s=0.01, concurrency=4, **kw)
    return OpenAIChat("fake-model", opts, cache_path=tmp_path / "cache.jsonl")


def _requests(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"request {k}"}] for k in range(n)]


def _cache_keys(tmp_path) -> list[str]:
    return [json.loads(line)["key"] for line in (tmp_path / "cache.jsonl").read_text().splitlines()]


# -- fast tests (fake upstream) ------------------------------------------------------------------------
def test_survives_drops_5xx_and_429_with_no_lost_or_duplicated_answer(fake, tmp_path):
    up, proxy = fake
    proxy.schedule = ["drop", "500", "429", "drop", "503"]
    chat = _chat(proxy, tmp_path)
    msgs = _requests(12) + _requests(3)  # 3 repeated requests are sent once
    out = chat.complete_many(msgs)
    assert out == [_answer(m) for m in msgs]  # every answer, in order, matched to its request
    assert up.calls == 12 and proxy.forwarded == 12 and proxy.received == 17
    assert chat.retries == 5
    keys = _cache_keys(tmp_path)
    assert len(keys) == len(set(keys)) == 12
    chat.close()


def test_resume_answers_from_the_cache_without_calls(fake, tmp_path):
    up, proxy = fake
    first = _chat(proxy, tmp_path)
    out = first.complete_many(_requests(8))
    first.close()
    again = _chat(proxy, tmp_path)
    assert again.complete_many(_requests(8)) == out
    assert up.calls == 8 and again.calls == 0
    more = again.complete_many(_requests(10))  # only the 2 new requests go out
    assert more[:8] == out and up.calls == 10
    again.close()
    assert len(_cache_keys(tmp_path)) == 10


def test_interrupted_run_loses_nothing_and_repeats_nothing(fake, tmp_path):
    up, proxy = fake
    proxy.fail_after = 5  # the endpoint goes down for good after 5 answers
    chat = _chat(proxy, tmp_path, max_retries=2)
    with pytest.raises(TeacherError, match="rerun to resume"):
        chat.complete_many(_requests(12))
    chat.close()
    assert up.calls == 5 and len(_cache_keys(tmp_path)) == 5  # every answer received was kept
    proxy.fail_after = None
    resumed = _chat(proxy, tmp_path)
    out = resumed.complete_many(_requests(12))
    resumed.close()
    assert out == [_answer(m) for m in _requests(12)]
    assert up.calls == 12  # the 5 paid answers were not asked again
    keys = _cache_keys(tmp_path)
    assert len(keys) == len(set(keys)) == 12


def test_bad_request_fails_at_once(fake, tmp_path):
    _, proxy = fake
    proxy.schedule = ["400"]
    chat = _chat(proxy, tmp_path)
    with pytest.raises(TeacherError, match="HTTP 400"):
        chat.complete_many(_requests(1))
    assert chat.calls == 1
    chat.close()


def test_api_key_is_sent_but_never_written(fake, tmp_path, monkeypatch):
    up, proxy = fake
    secret = "sk-test-" + "x" * 20
    monkeypatch.setenv("R2REC_OPENAI_API_KEY", secret)
    chat = _chat(proxy, tmp_path)
    chat.complete_many(_requests(2))
    assert up.auth == [f"Bearer {secret}"] * 2
    proxy.schedule = ["400"]
    with pytest.raises(TeacherError) as err:
        chat.complete_many([[{"role": "user", "content": "other"}]])
    chat.close()
    assert secret not in str(err.value)
    assert secret not in (tmp_path / "cache.jsonl").read_text()


def test_torn_cache_line_is_dropped(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "a", "text": "A"}) + "\n" + '{"key": "b", "te')
    cache = ResponseCache(path)
    assert cache.entries == {"a": "A"}
    cache.put("c", "C")
    cache.close()
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["a", "c"]


# -- the real thing: llama.cpp's OpenAI-compatible server with SmolLM2 ----------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(
            "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]'; it builds from "
            "source in several minutes): the real-server test needs it"
        )
    from r2rec.llm.models import smollm2_gguf_path

    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    port = _free_port()
    # The server logs every request verbosely: to a file, since a full pipe would block it.
    log = open(tmp_path_factory.mktemp("llama") / "server.log", "w+b")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise RuntimeError(f"llama.cpp server did not start: {log.read().decode()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
@pytest.mark.real_model
def test_real_server_thoughts_stage_survives_faults_and_resumes(llama_server, tmp_path):
    from r2rec.graph.synthetic import write_synthetic_run
    from r2rec.thoughts.stage import ThoughtsConfig, run_thoughts

    proxy = FaultProxy(llama_server)
    try:
        # 8 candidates keep the prompts short: the server answers the 6 hop requests in seconds.
        run = write_synthetic_run(tmp_path / "run", n_train_users=30, n_candidates=8, seed=4)
        proxy.schedule = ["drop", "500", "forward", "drop"]
        cfg = ThoughtsConfig(
            teacher="openai:smollm2-135m",
            max_samples=2,
            chunk_size=2,
            teacher_options={"base_url": proxy.url + "/v1", "max_tokens": 16, "backoff_s": 0.05, "concurrency": 2},
        )
        stats = run_thoughts(run, cfg, progress=False)
        n_requests = 3 * stats["with_chain"]  # one per hop
        assert stats["attempted"] == 2 and n_requests > 0
        assert proxy.forwarded == n_requests  # each hop request reached the model exactly once
        cache = [
            json.loads(x) for x in (run / "thoughts" / "cache" / "openai-smollm2-135m.jsonl").read_text().splitlines()
        ]
        assert len(cache) == len({c["key"] for c in cache}) == n_requests
        assert all(c["text"].strip() for c in cache)  # the model answered every hop
        assert sum(stats["by_reason"].values()) == 2

        again = run_thoughts(run, cfg, force=True, progress=False)  # a full rerun: all from the cache
        assert proxy.forwarded == n_requests
        assert again["by_reason"] == stats["by_reason"]
    finally:
        proxy.close()
