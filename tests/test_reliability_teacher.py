"""The openai: teacher under faults, and secrets kept out of every message, log and file.

A local HTTP server answers each request as scripted: a chat completion, a 5xx/408/429, a dropped connection,
a 200 that is not JSON or has no ``choices``, a 401 that echoes the API key and the URL back. Transient faults
are retried; requests whose retries run out leave their samples undecided, the stage keeps what it decided and
fails with one line that says how many requests failed and that a rerun completes them, and the rerun does,
asking nothing twice. A key planted in the environment and in ``base_url`` shows up nowhere: not in stderr or
stdout, not in any file of the run folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r2rec.cli import main
from r2rec.data.schema import read_jsonl
from r2rec.errors import redact
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.thoughts.openai_teacher import OpenAIChat, TeacherError, split_base_url
from r2rec.thoughts.stage import ThoughtsConfig, ThoughtsIncomplete, run_thoughts
from r2rec.thoughts.teachers import TeacherOptions

MARKER = "sk-r2rec-marker-0123456789abcdef"  # the planted secret


@pytest.fixture(autouse=True)
def _keep_log_level():
    """The CLI sets the r2rec log level from R2REC_LOG_LEVEL; later tests read INFO logs, so it is put back."""
    logger = logging.getLogger("r2rec")
    level = logger.level
    yield
    logger.setLevel(level)


def _answer(messages: list[dict]) -> str:
    return "echo " + hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:12]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        server = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.paths.append(self.path)
        action = server.decide(body)
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "401":  # a careless server: the credentials it got, echoed in its error body
            echo = f"invalid api key {self.headers.get('Authorization')} for {self.path}"
            return self._send(401, json.dumps({"error": {"message": echo}}).encode())
        if action == "garbage":
            return self._send(200, b"<html>502 bad gateway</html>", {"Content-Type": "text/html"})
        if action == "nochoices":
            return self._send(200, b'{"error": "overloaded"}', {"Content-Type": "application/json"})
        if action == "nullchoice":
            return self._send(200, b'{"choices": [{"message": null}]}', {"Content-Type": "application/json"})
        if action.isdigit():
            return self._send(int(action), b'{"error": "injected"}', {"Retry-After": "0"} if action == "429" else {})
        with server.lock:
            server.answered.append(body["messages"])
        data = {"choices": [{"message": {"role": "assistant", "content": _answer(body["messages"])}}]}
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})


class FaultServer:
    """``schedule``: actions for the next requests (then ``default``); ``fails(body)``: a request this server
    always fails with ``fail_with`` (a fixed subset of requests, e.g. one hop of some samples)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.schedule: list[str] = []
        self.default = "ok"
        self.fails = None
        self.fail_with = "503"
        self.received = 0
        self.answered: list = []
        self.paths: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def decide(self, body: dict) -> str:
        with self.lock:
            self.received += 1
            if self.schedule:
                return self.schedule.pop(0)
            if self.fails is not None and self.fails(body):
                return self.fail_with
            return self.default

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def _chat(server, tmp_path, **kw) -> OpenAIChat:
    opts = TeacherOptions(base_url=server.url + "/v1", backoff_s=0.001, concurrency=2, **kw)
    return OpenAIChat("m", opts, cache_path=tmp_path / "cache.jsonl")


def _requests(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"request {k}"}] for k in range(n)]


# -- the client: every transient fault is retried -------------------------------------------------------------
def test_malformed_bodies_and_transient_statuses_are_retried(server, tmp_path):
    server.schedule = ["garbage", "nochoices", "nullchoice", "408", "502", "520", "429", "drop", "409"]
    chat = _chat(server, tmp_path, max_retries=10)
    msgs = _requests(4)
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs]
    assert chat.retries == 9 and chat.failed == 0
    chat.close()


def test_retries_run_out_partial_answers_none_and_counts(server, tmp_path):
    server.fails = lambda body: body["messages"][0]["content"] in ("request 1", "request 3")
    server.fail_with = "garbage"  # a 200 that is no chat completion, for good
    chat = _chat(server, tmp_path, max_retries=2)
    msgs = _requests(5)
    out = chat.complete_many(msgs, partial=True)
    assert out == [_answer(m) if k not in (1, 3) else None for k, m in enumerate(msgs)]
    assert chat.failed == 2 and "malformed body" in chat.last_error and "after 3 attempts" in chat.last_error
    with pytest.raises(TeacherError, match="after 3 attempts") as err:  # without partial: an error
        chat.complete_many(msgs)
    assert err.value.transient
    server.fails = None
    assert chat.complete_many(msgs) == [_answer(m) for m in msgs]  # only the 2 missing ones are asked again
    assert len(server.answered) == 5
    chat.close()


def test_a_refusal_fails_at_once_even_in_partial_mode(server, tmp_path):
    server.default = "401"
    chat = _chat(server, tmp_path, max_retries=5)
    with pytest.raises(TeacherError, match="HTTP 401") as err:
        chat.complete_many(_requests(1), partial=True)
    assert not err.value.transient and chat.calls == 1
    chat.close()


def test_query_parameters_of_base_url_reach_every_request(server, tmp_path):
    assert split_base_url("https://h/v1/?key=abc&x=1") == ("https://h/v1", {"key": "abc", "x": "1"})
    opts = TeacherOptions(base_url=server.url + "/v1?key=abc", backoff_s=0.001)
    chat = OpenAIChat("m", opts, cache_path=None)
    assert chat.complete_many(_requests(1)) == [_answer(_requests(1)[0])]
    assert server.paths == ["/v1/chat/completions?key=abc"]  # the path did not land inside the query
    assert chat.display_url == server.url + "/v1"
    chat.close()


# -- the stage: finish what it can, keep it, say what failed; the rerun completes it ------------------------------
@pytest.fixture
def run(tmp_path):
    return write_synthetic_run(tmp_path / "run", n_train_users=30, seed=3)


def _cfg(server, **options) -> ThoughtsConfig:
    return ThoughtsConfig(
        teacher="openai:m",
        max_samples=24,
        chunk_size=8,
        teacher_options={
            "base_url": server.url + "/v1",
            "backoff_s": 0.001,
            "max_retries": 2,
            "concurrency": 2,
            **options,
        },
    )


def _hop(body: dict) -> int:
    return int(body["messages"][-1]["content"].rsplit("Write thought ", 1)[1][0])


def _sample_of(body: dict) -> str:
    return body["messages"][-1]["content"].split("Hint:")[0]


def test_failed_requests_leave_samples_undecided_and_a_rerun_completes_them(run, server, tmp_path):
    # Hop 2 of some samples fails for good (a 503 every time): the other samples are decided as usual.
    server.fails = lambda body: _hop(body) == 2 and hashlib.sha256(_sample_of(body).encode()).digest()[0] % 3 == 0
    with pytest.raises(ThoughtsIncomplete) as err:
        run_thoughts(run, _cfg(server), progress=False)
    text = str(err.value)
    progress = run / "thoughts" / "partial" / "progress.jsonl"
    decided = [json.loads(x) for x in progress.read_text().splitlines()]
    failed = 24 - len(decided)
    assert failed > 0 and len(text.splitlines()) == 1
    assert f"thoughts: {failed} teacher request(s) failed after every retry" in text
    assert f"{len(decided)} of 24 samples are decided and saved in {progress}, {failed} are not" in text
    assert "rerun the same command to complete them" in text and "HTTP 503 after 3 attempts" in text
    assert not (run / "thoughts" / "sft.jsonl.gz").exists() and not (run / "manifests" / "thoughts.json").exists()
    asked = len(server.answered)
    # The endpoint recovers: the rerun asks only what is missing (hop 2 and 3 of the undecided samples).
    server.fails = None
    stats = run_thoughts(run, _cfg(server), progress=False)
    assert stats["attempted"] == 24 and sum(stats["by_reason"].values()) == 24
    assert len(server.answered) - asked == 2 * failed
    # ... and ends exactly where a run that never failed ends.
    fresh = write_synthetic_run(tmp_path / "fresh", n_train_users=30, seed=3)
    run_thoughts(fresh, _cfg(server), progress=False)
    assert list(read_jsonl(run / "thoughts" / "sft.jsonl.gz")) == list(read_jsonl(fresh / "thoughts" / "sft.jsonl.gz"))


def test_an_endpoint_down_for_good_stops_after_one_chunk(run, server):
    server.default = "503"
    with pytest.raises(ThoughtsIncomplete) as err:
        run_thoughts(run, _cfg(server), progress=False)
    # Every hop-1 request of the first chunk failed (3 attempts each): the later chunks were never sent.
    progress = run / "thoughts" / "partial" / "progress.jsonl"
    decided = [json.loads(x) for x in progress.read_text().splitlines()] if progress.exists() else []
    assert all(r["outcome"] == "no_chain" for r in decided)  # only samples that needed no teacher
    n_asked = 8 - len(decided)
    assert n_asked > 0 and server.received == 3 * n_asked
    assert f"thoughts: {n_asked} teacher request(s) failed" in str(err.value)
    assert f"{len(decided)} of 24 samples are decided" in str(err.value)
    assert f"{24 - len(decided)} are not" in str(err.value)


def test_the_cli_says_it_in_one_line_and_does_not_exit_0(run, server, capsys, monkeypatch):
    monkeypatch.setenv("R2REC_LOG_LEVEL", "ERROR")
    server.default = "503"
    rc = main(
        [
            "thoughts",
            "--run",
            str(run),
            "--teacher",
            "openai:m",
            "--max-samples",
            "4",
            "--base-url",
            server.url + "/v1",
            "--set",
            "teacher_options={backoff_s: 0.001, max_retries: 1}",
        ]
    )
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if "error:" in x]
    assert rc != 0 and "Traceback" not in captured.err and len(lines) == 1
    assert "teacher request(s) failed after every retry" in lines[0] and "rerun the same command" in lines[0]
    assert captured.out == ""


# -- secrets -------------------------------------------------------------------------------------------------
def test_redact_removes_keys_from_urls_bodies_and_text(monkeypatch):
    monkeypatch.setenv("R2REC_OPENAI_API_KEY", MARKER)
    text = (
        f"https://user:{MARKER}@h/v1 https://h/v1?api_key={MARKER}&model=m Bearer {MARKER} "
        f'{{"error": "bad key {MARKER}"}} hf_{"a" * 34} token={MARKER}'
    )
    out = redact(text)
    assert MARKER not in out and "hf_aaaa" not in out and "model=m" in out and "https://***@h/v1" in out
    assert redact("https://h/v1?model=m") == "https://h/v1?model=m"  # nothing to hide: unchanged


def _files_with(root: Path, secret: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".gz":
                data = gzip.decompress(data)
            if secret.encode() in data:
                hits.append(str(p))
    return hits


def test_a_planted_key_reaches_no_message_log_or_file(run, server, capsys, monkeypatch):
    monkeypatch.setenv("R2REC_OPENAI_API_KEY", MARKER)
    # The HTTP library's own request log, at DEBUG, to stderr as a user debugging a run would set it.
    http_log = logging.StreamHandler(sys.stderr)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).addHandler(http_log)
        logging.getLogger(name).setLevel(logging.DEBUG)
    query = server.url + f"/v1?key={MARKER}"
    url = server.url.replace("http://", f"http://user:{MARKER}@") + f"/v1?key={MARKER}"

    def command(base_url):
        return [
            "thoughts",
            "--run",
            str(run),
            "--teacher",
            "openai:m",
            "--max-samples",
            "6",
            "--base-url",
            base_url,
            "--set",
            "teacher_options={backoff_s: 0.001, max_retries: 1}",
        ]

    outs = []
    try:
        server.default = "401"  # the server echoes the credentials it got (key, URL) in its error body
        for base_url in (query, url):
            rc = main(command(base_url))
            first = capsys.readouterr()
            assert rc != 0 and "HTTP 401" in first.err and "invalid api key" in first.err
            outs += [first.out, first.err]
        server.default = "ok"
        assert main(command(url)) == 0
        second = capsys.readouterr()
    finally:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).removeHandler(http_log)
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert "HTTP Request" in second.err  # the request log was on, and redacted
    stats = json.loads((run / "thoughts" / "stats.json").read_text())
    assert (
        stats["config"]["teacher_options"]["base_url"] == server.url.replace("http://", "http://***@") + "/v1?key=***"
    )
    for out in (*outs, second.out, second.err):
        assert MARKER not in out
    assert _files_with(run, MARKER) == []
    # And through the pipeline: its one-line failure carries the same redacted message.
    from r2rec.pipeline import PipelineError, run_pipeline

    server.default = "401"
    cfg = run.parent / "p.yaml"
    cfg.write_text(
        json.dumps(
            {
                "thoughts": {
                    "teacher": "openai:m",
                    "max_samples": 8,
                    "teacher_options": {"base_url": url, "max_retries": 0},
                }
            }
        )
    )
    with pytest.raises(PipelineError) as err:
        run_pipeline(cfg, run_root=run, only=["thoughts"])
    assert "HTTP 401" in str(err.value) and MARKER not in str(err.value)
    assert _files_with(run, MARKER) == []
