"""The openai: teacher at scale: bounded concurrency, a fleet of servers, and a run killed mid-flight that resumes
to exactly the output of an uninterrupted run (no trace lost, none written twice).

The servers are in-process fakes of an OpenAI-compatible endpoint on loopback that hold every request a few
milliseconds and count how many they hold at once. Their answer to a hop request restates the fact the request
reveals (a real citation) and, at the last hop, names the hinted title, so the faithfulness filter keeps traces
and the output file is not empty.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r2rec.data.schema import read_jsonl
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.thoughts.openai_teacher import OpenAIChat
from r2rec.thoughts.stage import ThoughtsConfig, run_thoughts
from r2rec.thoughts.teachers import TeacherOptions


def _answer(messages: list[dict]) -> str:
    """A teacher's thought: the revealed fact, and at the last hop the hinted title as the choice."""
    text = messages[-1]["content"]
    fact = re.search(r"Revealed at this step: (.*)\n", text)
    if fact is None:  # not a hop request (the client tests)
        return "echo " + str(abs(hash(text)) % 10**8)
    hint = re.search(r'Hint: the user actually chose "(.*)" next\.', text)
    last = "end by naming" in text
    return fact.group(1) + (f' So "{hint.group(1)}" is next.' if last and hint else "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        srv = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.shared.lock:
            srv.in_flight += 1
            srv.shared.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.shared.max_in_flight = max(srv.shared.max_in_flight, srv.shared.in_flight)
        try:
            time.sleep(srv.delay)
            if srv.status != 200:
                data, status = b'{"error": "unavailable"}', srv.status
            else:
                content = _answer(body["messages"])
                data, status = json.dumps({"choices": [{"message": {"content": content}}]}).encode(), 200
        finally:
            with srv.shared.lock:
                srv.in_flight -= 1
                srv.shared.in_flight -= 1
                if status == 200:
                    srv.answered.append(json.dumps(body["messages"], sort_keys=True))
                    srv.shared.answered += 1
                    if srv.shared.answered == srv.shared.signal_at:
                        srv.shared.reached.set()
                else:
                    srv.refused += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Shared:
    """What all servers of a fleet count together."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.answered = 0
        self.signal_at = -1
        self.reached = threading.Event()


class SlowServer:
    def __init__(self, shared: _Shared, delay: float = 0.02, status: int = 200):
        self.shared, self.delay, self.status = shared, delay, status
        self.in_flight = self.max_in_flight = self.refused = 0
        self.answered: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 64
        self.httpd.owner = self
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fleet():
    shared = _Shared()
    servers: list[SlowServer] = []

    def make(n: int, **kw) -> list[SlowServer]:
        servers.extend(SlowServer(shared, **kw) for _ in range(n))
        return servers[-n:]

    yield shared, make
    for s in servers:
        s.close()


def _requests(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"request {k}"}] for k in range(n)]


# -- bounded concurrency ----------------------------------------------------------------------------------
@pytest.mark.parametrize("concurrency", [1, 8])
def test_never_more_than_concurrency_requests_in_flight_and_the_bound_is_reached(fleet, tmp_path, concurrency):
    shared, make = fleet
    (server,) = make(1, delay=0.03)
    opts = TeacherOptions(base_url=server.url, concurrency=concurrency, backoff_s=0.001)
    chat = OpenAIChat("m", opts, cache_path=tmp_path / "cache.jsonl")
    msgs = _requests(40)
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs]
    chat.close()
    assert server.max_in_flight == chat.max_in_flight == concurrency  # bounded, and the bound is used
    assert len(server.answered) == len(set(server.answered)) == 40  # each request sent exactly once
    assert len(chat.latencies) == 40 and min(chat.latencies) >= 0.03


def test_a_fleet_shares_the_requests_and_the_bound_holds_over_all_of_it(fleet, tmp_path):
    shared, make = fleet
    a, b = make(2, delay=0.03)
    opts = TeacherOptions(base_url=f"{a.url} {b.url}", concurrency=8, backoff_s=0.001)
    chat = OpenAIChat("m", opts, cache_path=tmp_path / "cache.jsonl")
    msgs = _requests(48)
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs]
    chat.close()
    assert shared.max_in_flight == 8  # over the whole fleet
    assert a.max_in_flight <= 5 and b.max_in_flight <= 5  # least-in-flight: neither server holds most of it
    assert len(a.answered) + len(b.answered) == len(set(a.answered + b.answered)) == 48
    assert min(len(a.answered), len(b.answered)) >= 16
    assert chat.display_url == f"{a.url} {b.url}"


def test_a_retry_goes_to_another_server_of_the_fleet(fleet, tmp_path):
    shared, make = fleet
    (down,) = make(1, delay=0.0, status=503)
    (up,) = make(1, delay=0.01)
    opts = TeacherOptions(base_url=f"{down.url} {up.url}", concurrency=4, backoff_s=0.001, max_retries=1)
    chat = OpenAIChat("m", opts, cache_path=None)
    msgs = _requests(20)
    # One retry is enough for every request: a request that met the broken server retries on the other one.
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs]
    chat.close()
    assert down.refused == chat.retries > 0 and chat.failed == 0 and len(up.answered) == 20


def test_the_credentials_of_every_url_of_a_fleet_are_redacted(fleet, tmp_path):
    _, make = fleet
    a, b = make(2, delay=0.0)
    one, two = "fleet-secret-one-0123", "fleet-secret-two-4567"
    b_url = b.url.replace("http://", f"http://user:{two}@")
    chat = OpenAIChat("m", TeacherOptions(base_url=f"{a.url}?key={one} {b_url}", concurrency=2), cache_path=None)
    msgs = _requests(6)
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs] and a.answered and b.answered
    chat.close()
    assert one not in chat.display_url and two not in chat.display_url
    assert one not in chat.redact(f"HTTP 401: bad key {one}") and two not in chat.redact(f"echo {b_url}")


# -- a run killed while requests are in flight ------------------------------------------------------------
N_SAMPLES, CONCURRENCY = 32, 8


def _cfg(url: str) -> ThoughtsConfig:
    return ThoughtsConfig(
        teacher="openai:m",
        max_samples=N_SAMPLES,
        chunk_size=8,
        teacher_options={"base_url": url, "concurrency": CONCURRENCY, "backoff_s": 0.001},
    )


def _outputs(run: Path) -> tuple[list[dict], dict]:
    records = list(read_jsonl(run / "thoughts" / "sft.jsonl.gz"))
    stats = json.loads((run / "thoughts" / "stats.json").read_text())
    return records, stats["by_reason"]


def _cache_keys(run: Path) -> list[str]:
    path = run / "thoughts" / "cache" / "openai-m.jsonl"
    keys = []
    for line in path.read_text().splitlines():
        try:
            keys.append(json.loads(line)["key"])
        except ValueError:  # a line torn by the kill (dropped on load)
            pass
    return keys


@pytest.fixture
def reference(fleet, tmp_path):
    """An uninterrupted run's outputs and the number of distinct requests it made."""
    shared, make = fleet
    (server,) = make(1, delay=0.0)
    run = write_synthetic_run(tmp_path / "reference", n_train_users=40, seed=5)
    stats = run_thoughts(run, _cfg(server.url), progress=False)
    records, reasons = _outputs(run)
    assert stats["kept"] >= 10 and len(records) == stats["kept"]  # traces the filter keeps: a real output
    n_requests = len(set(server.answered))
    assert n_requests == len(server.answered) == 3 * stats["with_chain"]
    return records, reasons, n_requests


def _check_resumed(run: Path, reference, answered: list[str]) -> None:
    records, reasons, n_requests = reference
    got, got_reasons = _outputs(run)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids))  # no trace written twice
    assert got == records and got_reasons == reasons  # none lost, none changed
    keys = _cache_keys(run)
    assert len(keys) == len(set(keys)) == n_requests  # every answer stored once
    # Paid calls: each distinct request once, plus at most the ones in flight when the run died.
    assert n_requests <= len(answered) <= n_requests + CONCURRENCY
    assert len(set(answered)) == n_requests


def test_a_run_killed_mid_flight_resumes_to_the_uninterrupted_output(fleet, reference, tmp_path):
    shared, make = fleet
    (server,) = make(1, delay=0.02)
    run = write_synthetic_run(tmp_path / "run", n_train_users=40, seed=5)
    n_requests = reference[2]
    # SIGKILL once about half of the answers have come back, in the middle of a round of 8 requests.
    shared.answered, shared.signal_at = 0, n_requests // 2 + 3
    cmd = [
        sys.executable,
        "-c",
        "import sys; from r2rec.cli import main; sys.exit(main(sys.argv[1:]))",
        "thoughts",
        "--run",
        str(run),
        "--teacher",
        "openai:m",
        "--max-samples",
        str(N_SAMPLES),
        "--base-url",
        server.url,
        "--set",
        "chunk_size=8",
        f"teacher_options={{concurrency: {CONCURRENCY}, backoff_s: 0.001}}",
    ]
    env = {**os.environ, "R2REC_LOG_LEVEL": "ERROR"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert shared.reached.wait(120), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        in_flight = shared.in_flight
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "thoughts" / "sft.jsonl.gz").exists()  # it died before its end
    progress = run / "thoughts" / "partial" / "progress.jsonl"
    decided = [json.loads(x)["i"] for x in progress.read_text().splitlines()] if progress.exists() else []
    assert len(decided) == len(set(decided)) < N_SAMPLES
    assert 0 < len(_cache_keys(run)) < n_requests
    time.sleep(0.1)  # let the requests the dead client left in flight finish on the server
    assert in_flight <= CONCURRENCY
    stats = run_thoughts(run, _cfg(server.url), progress=False)
    assert stats["attempted"] == N_SAMPLES
    _check_resumed(run, reference, server.answered)


def test_an_exception_mid_flight_resumes_to_the_uninterrupted_output(fleet, reference, tmp_path, monkeypatch):
    shared, make = fleet
    (server,) = make(1, delay=0.005)
    run = write_synthetic_run(tmp_path / "run", n_train_users=40, seed=5)
    fetch = OpenAIChat._fetch
    count = {"n": 0}
    lock = threading.Lock()

    def interrupted(self, key, payload):  # Ctrl-C in the middle of a round, while other requests are out
        with lock:
            count["n"] += 1
            n = count["n"]
        if n == reference[2] // 2:
            raise KeyboardInterrupt
        fetch(self, key, payload)

    monkeypatch.setattr(OpenAIChat, "_fetch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_thoughts(run, _cfg(server.url), progress=False)
    assert not (run / "thoughts" / "sft.jsonl.gz").exists()
    monkeypatch.setattr(OpenAIChat, "_fetch", fetch)
    run_thoughts(run, _cfg(server.url), progress=False)
    _check_resumed(run, reference, server.answered)
