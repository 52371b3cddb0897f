"""``r2rec serve``: the FastAPI app served by uvicorn on loopback, called over real HTTP with httpx."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from r2rec.data.schema import PreparedData
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.serve import RecommendService
from r2rec.serve_http import MAX_BODY_BYTES, check_host, create_app, is_loopback


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = write_synthetic_run(tmp_path_factory.mktemp("serve_http") / "run", seed=5)
    build_graph(run)
    return run


@pytest.fixture(scope="module")
def sample(run):
    return PreparedData(run / "prepared").samples("test", 0)[0]


@pytest.fixture(scope="module")
def server(run, tiny_model_dir):
    """Base URL of the app served by uvicorn in a thread, on a free loopback port."""
    import uvicorn

    service = RecommendService(run, model="base", base_model=str(tiny_model_dir), max_new_tokens=6, threads=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves on this very socket
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "base" and body["max_candidates"] == 50


def test_recommend_returns_a_candidate_with_reasoning(client, sample):
    r = client.post("/recommend", json={"history": list(sample.history), "candidates": list(sample.candidates)})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["item"] in sample.candidates
    assert sorted(c["item"] for c in res["candidates"]) == sorted(sample.candidates)
    assert isinstance(res["reasoning"], list) and res["raw"].endswith(f"<answer>{res['title']}</answer>")
    assert "score" in res["faithfulness"] and "citations" in res["faithfulness"]
    # Titles work as well as ids, and without candidates the service generates them.
    r = client.post("/recommend", json={"history": [res["history"][0]["title"], *sample.history[1:]],
                                        "max_new_tokens": 2})
    assert r.status_code == 200, r.text
    gen = r.json()
    assert gen["candidates_source"] == "generated" and len(gen["candidates"]) == 20
    assert gen["item"] in [c["item"] for c in gen["candidates"]]


def test_concurrent_requests_get_the_sequential_answer(client, server, sample):
    from concurrent.futures import ThreadPoolExecutor

    body = {"history": list(sample.history), "candidates": list(sample.candidates)}
    want = client.post("/recommend", json=body).json()

    def call(_):
        with httpx.Client(base_url=server, timeout=60) as c:
            return c.post("/recommend", json=body)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(call, range(4)))
    assert [r.status_code for r in got] == [200] * 4
    assert {(r.json()["item"], r.json()["raw"]) for r in got} == {(want["item"], want["raw"])}


@pytest.mark.parametrize("body, status, message", [
    ({"history": ["Item 5", "No Such Movie"]}, 422, "history[1]: unknown title 'No Such Movie'"),
    ({"history": []}, 422, "history: empty"),
    ({"candidates": ["Item 5", "Item 6"]}, 422, "history: Field required"),
    ({"history": [5], "candidates": [8]}, 422, "candidates: got 1, need between 2 and 50"),
    ({"history": [5], "candidates": list(range(10, 61))}, 422, "candidates: got 51, need between 2 and 50"),
    ({"history": [5], "candidates": [8, 9, 8]}, 422, "candidates[2]: 8 repeats candidates[0]"),
    ({"history": [5, 1.5]}, 422, "history.1"),
    ({"history": [5, True]}, 422, "history.1"),
    ({"history": "Item 5"}, 422, "history: Input should be a valid list"),
    ({"history": [5], "user": "x"}, 422, "user: Extra inputs are not permitted"),
    ({"history": [5], "max_new_tokens": 5000}, 422, "max_new_tokens must be an integer in [0, 1024]"),
])
def test_bad_requests_are_clear_4xx_json(client, body, status, message):
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_not_json_is_400(client):
    r = client.post("/recommend", content=b'{"history": [5', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_oversized_body_is_413(client):
    big = json.dumps({"history": ["x" * 100] * 1000}).encode()
    assert len(big) > MAX_BODY_BYTES
    r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]

    # No Content-Length (chunked transfer): cut off while streaming in.
    def chunks():
        for k in range(0, len(big), 8192):
            yield big[k:k + 8192]

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["error"]
    # The server is still fine afterwards.
    assert client.get("/health").status_code == 200


def test_loopback_only_unless_allowed(run, capsys):
    from r2rec.cli import main

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_host(host, allow_remote=False)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="needs --allow-remote"):
            check_host(host, allow_remote=False)
        check_host(host, allow_remote=True)
    # The CLI refuses before loading anything.
    assert main(["serve", "--run", str(run), "--host", "0.0.0.0"]) == 1
    assert "not a loopback address" in capsys.readouterr().err
