"""``r2rec serve``: the FastAPI app served by uvicorn on loopback, called over real HTTP with httpx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from r2rec.data.schema import PreparedData
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.serve import NothingToRecommend, RecommendService, ServiceBusy
from r2rec.serve_http import MAX_BODY_BYTES, check_host, create_app, is_loopback

NEW_TOKENS_LIMIT = 16  # keeps whatever the schema allows (schemathesis tries the maximum) cheap on the tiny model


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

    service = RecommendService(
        run,
        model="base",
        base_model=str(tiny_model_dir),
        max_new_tokens=6,
        threads=1,
        max_new_tokens_limit=NEW_TOKENS_LIMIT,
    )
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
    service.close()


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
    r = client.post(
        "/recommend", json={"history": [res["history"][0]["title"], *sample.history[1:]], "max_new_tokens": 2}
    )
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


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"history": ["Item 5", "No Such Movie"]}, 422, "history[1]: unknown title 'No Such Movie'"),
        ({"history": []}, 422, "history: List should have at least 1 item"),
        ({"history": [5] * 1001}, 422, "history: List should have at most 1000 items"),
        ({"history": [5, ""]}, 422, "history.1.title: String should have at least 1 character"),
        ({"history": [5, " "]}, 422, "history[1]: empty title"),
        ({"candidates": ["Item 5", "Item 6"]}, 422, "history: Field required"),
        ({"history": [5], "candidates": [8]}, 422, "candidates: List should have at least 2 items"),
        ({"history": [5], "candidates": list(range(10, 61))}, 422, "candidates: List should have at most 50 items"),
        ({"history": [5], "candidates": [8, 9, 8]}, 422, "candidates[2]: 8 repeats candidates[0]"),
        ({"history": [5, 1.5]}, 422, "history.1.id: Input should be a valid integer"),
        ({"history": [5, True]}, 422, "history.1.id: Input should be a valid integer"),
        ({"history": "Item 5"}, 422, "history: Input should be a valid list"),
        ({"history": [5], "user": "x"}, 422, "user: Extra inputs are not permitted"),
        ({"history": [5], "allow_history": "yes"}, 422, "allow_history: Input should be a valid boolean"),
        (
            {"history": [5], "max_new_tokens": 5000},
            422,
            f"max_new_tokens: Input should be less than or equal to {NEW_TOKENS_LIMIT}",
        ),
        ({"history": [5, 8, 9], "candidates": [9, 8]}, 400, "candidates: all 2 given candidates are in the history"),
    ],
)
def test_bad_requests_are_clear_4xx_json(client, body, status, message):
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_history_items_are_not_recommended_unless_asked(client):
    body = {"history": [5, 8, 9], "candidates": [9, 30, 8, 31], "max_new_tokens": 2}
    res = client.post("/recommend", json=body).json()
    assert [c["item"] for c in res["candidates_removed"]] == [9, 8]
    assert sorted(c["item"] for c in res["candidates"]) == [30, 31] and res["item"] in (30, 31)
    res = client.post("/recommend", json={**body, "allow_history": True}).json()
    assert res["candidates_removed"] == [] and len(res["candidates"]) == 4


def test_wrong_method_is_405_with_allow(client):
    for method, path, allow in (("GET", "/recommend", "POST"), ("DELETE", "/health", "GET")):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allow and "Method Not Allowed" in r.json()["error"]


def test_openapi_schema_states_the_limits_and_errors(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/recommend"]["post"]
    assert set(op["responses"]) == {"200", "400", "413", "422", "503"}
    schemas = spec["components"]["schemas"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Recommendation")
    assert all(
        op["responses"][c]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        for c in ("400", "413", "422", "503")
    )
    assert "Retry-After" in op["responses"]["503"]["headers"]
    req = schemas["RecommendRequest"]
    assert req["required"] == ["history"] and req["additionalProperties"] is False
    hist = req["properties"]["history"]
    assert (hist["minItems"], hist["maxItems"]) == (1, 1000) and hist["description"]
    cands = next(a for a in req["properties"]["candidates"]["anyOf"] if a.get("type") == "array")
    assert (cands["minItems"], cands["maxItems"]) == (2, 50)
    budget = next(a for a in req["properties"]["max_new_tokens"]["anyOf"] if a.get("type") == "integer")
    assert (budget["minimum"], budget["maximum"]) == (0, NEW_TOKENS_LIMIT)
    assert req["properties"]["allow_history"] == {
        "type": "boolean",
        "default": False,
        "title": "Allow History",
        "description": req["properties"]["allow_history"]["description"],
    }
    # Every field of the answer is declared, and the answer validates against it.
    rec = schemas["Recommendation"]
    assert all(p.get("description") or "$ref" in p for p in rec["properties"].values())
    body = client.post("/recommend", json={"history": [5, 8], "max_new_tokens": 2}).json()
    assert set(body) == set(rec["properties"]) == set(rec["required"])
    assert set(client.get("/health").json()) == set(schemas["Health"]["properties"])


def test_errors_of_the_service_map_to_400_and_503():
    from starlette.testclient import TestClient

    class Failing:
        def __init__(self, exc):
            self.exc = exc

        def info(self):
            return {
                "max_history_items": 5,
                "max_candidates": 4,
                "max_new_tokens_limit": 8,
                "max_history": 3,
                "max_pending": 2,
            }

        def recommend(self, *args, **kw):
            raise self.exc

    for exc, status, header in ((NothingToRecommend("nothing left"), 400, None), (ServiceBusy("busy"), 503, "1")):
        with TestClient(create_app(Failing(exc))) as c:
            r = c.post("/recommend", json={"history": [1]})
        assert r.status_code == status and r.json() == {"error": str(exc)}
        assert r.headers.get("retry-after") == header


@pytest.mark.slow
def test_schemathesis_finds_no_mismatch_between_schema_and_behaviour(server, tmp_path):
    """Schema-driven fuzzing with every check but positive_data_acceptance (a schema-valid title need not be in
    the catalogue, and an unknown one is a 422 by design): 405 with Allow, declared statuses, content types and
    headers, response bodies against their schemas, schema-violating bodies rejected (413 counts: a body over
    the size limit is turned away before it is parsed)."""
    pytest.importorskip("schemathesis", reason="schemathesis comes with the test extra")
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["400", "405", "413", "422"]\n')
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "25",
        "--seed",
        "1",
        "--workers",
        "2",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


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
            yield big[k : k + 8192]

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
    assert main(["serve", "--run", str(run), "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
