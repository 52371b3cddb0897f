"""RecommendService and ``r2rec recommend``: answers, candidate generation, faithfulness marks, input errors."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from r2rec.data.schema import PreparedData, Sample, read_jsonl, write_jsonl
from r2rec.grammar import cite
from r2rec.graph.chains import ChainConfig, ChainSampler
from r2rec.graph.graph import build_graph
from r2rec.graph.synthetic import write_synthetic_run
from r2rec.prompting import PromptBuilder
from r2rec.serve import MicroBatcher, NothingToRecommend, RecommendService, ServiceBusy, format_text, resolve_kind


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = write_synthetic_run(tmp_path_factory.mktemp("serve") / "run", seed=3)
    build_graph(run)
    return run


@pytest.fixture(scope="module")
def service(run, tiny_model_dir):
    svc = RecommendService(
        run, model="base", base_model=str(tiny_model_dir), max_new_tokens=8, threads=1, batch_wait_ms=50
    )  # a wide window: the concurrency test's threads all make one batch
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def sample(run):
    return PreparedData(run / "prepared").samples("val", 0)[0]


def test_answer_is_a_shown_candidate_with_reasoning_and_faithfulness(run, service, sample):
    titles = service.titles
    # Mixed ways of naming items: a title (other case and spacing), an id, "id:<n>".
    history = [
        titles[sample.history[0]].upper(),
        int(sample.history[1]),
        f"id:{sample.history[2]}",
        *[f"  {titles[h]} " for h in sample.history[3:]],
    ]
    res = service.recommend(history, [titles[c] for c in sample.candidates])
    json.dumps(res, allow_nan=False)  # the HTTP layer sends it as is

    assert [h["item"] for h in res["history"]] == list(sample.history)
    assert res["model"] == "base" and res["candidates_source"] == "given"
    assert res["item"] in sample.candidates and res["title"] == titles[res["item"]]
    # Candidates as shown: the prompt builder's order and evidence for the same history and candidates.
    ref = PromptBuilder(run, service.prompt_config, graph=service.graph).prompt(sample)
    assert [c["item"] for c in res["candidates"]] == ref.candidates
    assert [c["evidence"] for c in res["candidates"]] == pytest.approx(ref.evidence, abs=1e-6)
    assert ref.evidence == sorted(ref.evidence, reverse=True) and ref.evidence[0] > 0
    assert [c["item"] for c in res["candidates"] if c["chosen"]] == [res["item"]]
    assert all(isinstance(c["logprob"], float) for c in res["candidates"])
    # The completion format: reasoning lines in <think>, the chosen title in <answer>.
    assert res["raw"].startswith("<think>\n") and res["raw"].endswith(f"<answer>{res['title']}</answer>")
    assert all(isinstance(t, str) and t for t in res["reasoning"])
    assert "\n".join(res["reasoning"]) in res["raw"]
    f = res["faithfulness"]
    assert set(f) == {"score", "cited", "real", "citations"} and f["cited"] == len(f["citations"])
    # Greedy: the same request gets the same answer.
    again = service.recommend(list(sample.history), list(sample.candidates))
    assert (again["item"], again["raw"]) == (res["item"], res["raw"])
    assert "answer: " + res["title"] in format_text(res)


def test_generated_candidates_are_the_strongest_by_train_evidence(service, sample):
    res = service.recommend(list(sample.history))
    items = [c["item"] for c in res["candidates"]]
    assert res["candidates_source"] == "generated"
    assert len(items) == len(set(items)) == 20 and not set(items) & set(sample.history)
    assert res["item"] in items
    # Independent check: evidence over the whole catalogue outside the history.
    rest = [i for i in sorted(service.titles) if i not in sample.history]
    probe = Sample("anyone", sample.history, rest[0], tuple(rest), "val", 0)
    ev = dict(zip(rest, ChainSampler(service.graph, ChainConfig(max_users_per_item=0)).candidate_evidence(probe)))
    chosen = [ev[i] for i in items]
    others = [ev[i] for i in rest if i not in items]
    assert max(chosen) > 0 and min(chosen) >= max(others)
    assert [c["evidence"] for c in res["candidates"]] == pytest.approx(sorted(chosen, reverse=True), abs=1e-6)


def test_faithfulness_marks_real_and_invented_citations(service, sample):
    g, titles = service.graph, service.titles
    u = g.display_name(0)
    a, b = (int(i) for i in g.user_items(0)[:2])
    if g.position(0, a) > g.position(0, b):
        a, b = b, a
    never = next(i for i in sorted(titles) if not g.has_interaction(0, i))
    lines = [
        cite(u, "watched", titles[a], titles[b]),  # real, and in that order
        cite(u, "watched", titles[b], titles[a]),  # real items, wrong order
        cite(u, "watched", titles[never]),  # no such interaction
        cite("999999", "watched", titles[a]),  # no such user
        cite(None, "watched", titles[sample.history[-1]]),  # the requesting user's own history
        cite(u, "watched", "A Film That Does Not Exist"),
    ]
    rep = service.faithfulness_report(lines, sample.history)
    got = [(c["status"], c["why"]) for c in rep["citations"]]
    assert got == [
        ("real", None),
        ("real", None),
        ("real", None),
        ("invented", "order"),
        ("invented", "no_interaction"),
        ("invented", "unknown_user"),
        ("real", None),
        ("invented", "unknown_item"),
    ]
    assert rep["citations"][6]["user"] is None and rep["citations"][0]["user"] == u
    assert (rep["cited"], rep["real"]) == (8, 4) and rep["score"] == pytest.approx(0.5)
    assert service.faithfulness_report(["no citation here"], sample.history)["score"] is None


@pytest.mark.parametrize(
    "history, candidates, kw, message",
    [
        ([], None, {}, "history: empty"),
        (["Item 5", "Not A Real Item"], None, {}, "history[1]: unknown title 'Not A Real Item'"),
        (["Item 5", "Itme 40"], None, {}, "did you mean 'Item 40'"),
        ([5, 10**6], None, {}, "history[1]: unknown item id 1000000"),
        (["id:777777"], None, {}, "history[0]: unknown item id 777777"),
        ([5, True], None, {}, "history[1]: expected a title (string) or an item id (integer), got True"),
        ([5, 4.0], None, {}, "history[1]: expected a title"),
        ("Item 5", None, {}, "history: expected a list"),
        ([5], ["Item 8"], {}, "candidates: got 1, need between 2 and 50"),
        ([5], [f"Item {i}" for i in range(10, 61)], {}, "candidates: got 51, need between 2 and 50"),
        ([5], ["Item 8", "Item 9", "item 8"], {}, "candidates[2]: 'item 8' repeats candidates[0] (item 8)"),
        ([5], ["Item 8", ""], {}, "candidates[1]: empty title"),
        ([5], None, {"max_new_tokens": -1}, "max_new_tokens must be an integer in [0, 1024]"),
        ([5], None, {"max_new_tokens": 10**6}, "max_new_tokens must be an integer in [0, 1024]"),
        ([5] * 1001, None, {}, "history: got 1001 items, at most 1000 are accepted"),
    ],
)
def test_bad_inputs_are_clear_value_errors(service, history, candidates, kw, message):
    with pytest.raises(ValueError) as e:
        service.recommend(history, candidates, **kw)
    assert message in str(e.value)


def test_history_longer_than_the_prompt_keeps_the_newest(service):
    history = [f"Item {i}" for i in range(10, 24)]
    res = service.recommend(history, ["Item 40", "Item 41", "Item 42"])
    assert res["history_dropped"] == 4 and [h["title"] for h in res["history"]] == history[4:]


@pytest.fixture(scope="module")
def dup_run(run, tmp_path_factory):
    """The same run with item 7 renamed to item 6's title (catalogues do have duplicate titles)."""
    dup = tmp_path_factory.mktemp("dup") / "run"
    shutil.copytree(run / "prepared", dup / "prepared")
    rows = list(read_jsonl(dup / "prepared" / "items.jsonl"))
    for r in rows:
        if r["item"] == 7:
            r["title"] = "Item 6"
    write_jsonl(dup / "prepared" / "items.jsonl", rows)
    return dup


def test_duplicate_titles_need_ids_and_never_share_a_prompt(dup_run, tiny_model_dir):
    svc = RecommendService(dup_run, model="base", base_model=str(tiny_model_dir), max_new_tokens=0, threads=1)
    with pytest.raises(ValueError, match=r"history\[0\]: title 'item 6' names 2 catalogue items \(ids \[6, 7\]\)"):
        svc.recommend(["item 6"])
    with pytest.raises(ValueError, match=r"candidates\[1\]: item 7 has the same title 'Item 6' as candidates\[0\]"):
        svc.recommend(["id:6"], [6, 7, 8])
    # The generator keeps at most one of the two, so the answer can always be told apart.
    cands = svc.generate_candidates([1, 2, 3], n=90)
    assert len(cands) == 90 and not {6, 7} <= set(cands) and len({svc.titles[c] for c in cands}) == 90
    svc.close()


def test_auto_picks_the_most_trained_checkpoint(tmp_path):
    (tmp_path / "prepared").mkdir()
    assert resolve_kind(tmp_path) == "base"
    (tmp_path / "checkpoints" / "sft-direct" / "final").mkdir(parents=True)
    (tmp_path / "checkpoints" / "sft-direct" / "final" / "config.json").write_text("{}")
    assert resolve_kind(tmp_path) == "base"  # the direct ablation is only served when asked for
    (tmp_path / "checkpoints" / "sft" / "final").mkdir(parents=True)
    assert resolve_kind(tmp_path) == "base"  # an empty folder is no checkpoint
    (tmp_path / "checkpoints" / "sft" / "final" / "config.json").write_text("{}")
    assert resolve_kind(tmp_path) == "sft"
    (tmp_path / "checkpoints" / "rl" / "final").mkdir(parents=True)
    (tmp_path / "checkpoints" / "rl" / "final" / "adapter_config.json").write_text("{}")
    assert resolve_kind(tmp_path) == "rl"
    assert resolve_kind(tmp_path, "sft") == "sft"
    with pytest.raises(ValueError, match="model must be one of"):
        resolve_kind(tmp_path, "best")


def test_auto_serves_a_lora_adapter_and_direct_answers(run, tiny_model_dir, tmp_path, sample):
    from peft import LoraConfig, get_peft_model

    from r2rec.llm.models import load_model

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    model, tok = load_model(tiny_model_dir)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for kind in ("sft", "sft-direct"):
        peft.save_pretrained(copy / "checkpoints" / kind / "final")
    svc = RecommendService(copy, model="auto", max_new_tokens=4, threads=1)
    assert svc.kind == "sft" and svc.described["adapter"].endswith("checkpoints/sft/final")
    assert svc.described["model"] == str(tiny_model_dir)  # the base the adapter records
    assert svc.recommend(list(sample.history), list(sample.candidates))["item"] in sample.candidates
    svc.close()
    direct_service = RecommendService(copy, model="sft-direct")
    direct = direct_service.recommend(list(sample.history), list(sample.candidates))
    direct_service.close()
    assert direct["reasoning"] == [] and direct["raw"] == f"<answer>{direct['title']}</answer>"
    assert direct["faithfulness"]["score"] is None


def test_cli_recommend_text_json_and_errors(run, tiny_model_dir, sample, service, capsys):
    from r2rec.cli import main

    titles = service.titles
    base = [
        "recommend",
        "--run",
        str(run),
        "--model",
        "base",
        "--base-model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "4",
        "--threads",
        "1",
        "--history",
        "|".join(titles[h] for h in sample.history),
    ]
    assert main(base + ["--candidates", "|".join(titles[c] for c in sample.candidates), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["item"] in sample.candidates and res["candidates_source"] == "given"
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "candidates (generated" in out and "reasoning:" in out and "answer: " in out
    assert main(base[:-1] + ["Item 5|Nope"]) == 2
    assert "r2rec recommend: error: history[1]: unknown title 'Nope'" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run.parent / "missing"), "--history", "Item 5"]) == 2
    assert "not a prepared run" in capsys.readouterr().err


# -- the history is not recommended back ------------------------------------------------------------------
def test_given_candidates_in_the_whole_history_are_left_out(service):
    # 14 items: the prompt shows the last 10, but the 4 older ones were consumed too.
    history = [f"Item {i}" for i in range(10, 24)]
    res = service.recommend(history, ["Item 10", "Item 40", "Item 23", "Item 41"])
    assert res["history_dropped"] == 4
    assert [c["title"] for c in res["candidates_removed"]] == ["Item 10", "Item 23"]
    assert sorted(c["title"] for c in res["candidates"]) == ["Item 40", "Item 41"]
    assert res["title"] in ("Item 40", "Item 41") and res["allow_history"] is False
    assert "left out, already in the history: Item 10 | Item 23" in format_text(res)
    # Asked for: kept, and the model may pick them.
    kept = service.recommend(history, ["Item 10", "Item 40", "Item 23", "Item 41"], allow_history=True)
    assert kept["candidates_removed"] == [] and len(kept["candidates"]) == 4 and kept["allow_history"] is True
    # One left: it is the answer.
    one = service.recommend(history, ["Item 10", "Item 40", "Item 23"])
    assert [c["title"] for c in one["candidates"]] == ["Item 40"] and one["title"] == "Item 40"


def test_candidates_all_in_the_history_are_a_clear_error(service):
    history = [f"Item {i}" for i in range(10, 24)]
    with pytest.raises(
        NothingToRecommend,
        match=r"candidates: all 2 given candidates are in the history.*"
        r"allow_history=true",
    ):
        service.recommend(history, ["Item 11", "item 12"])


def test_generated_candidates_avoid_the_whole_history(service):
    history = list(range(0, 30))  # far more than the 10 the prompt shows
    res = service.recommend(history, max_new_tokens=0)
    items = {c["item"] for c in res["candidates"]}
    assert res["history_dropped"] == 20 and len(items) == 20 and not items & set(history)
    # allow_history: only the shown history is kept out (older items may come back).
    again = service.recommend(history, max_new_tokens=0, allow_history=True)
    assert not {c["item"] for c in again["candidates"]} & set(history[-10:])
    with pytest.raises(NothingToRecommend, match="covers the whole catalogue"):
        service.recommend(sorted(service.titles), max_new_tokens=0)


# -- micro-batching ----------------------------------------------------------------------------------------
def test_concurrent_requests_share_one_generation_call_and_get_the_sequential_answer(service, run):
    samples = PreparedData(run / "prepared").samples("val", 0)[:6]
    requests = [(list(s.history), list(s.candidates)) for s in samples]
    alone = [service.recommend(h, c) for h, c in requests]
    calls = []
    generate = service._generate

    def counting(prompts, titles, budget):
        calls.append(len(prompts))
        return generate(prompts, titles, budget)

    service._generate = counting
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: service.recommend(*r), requests))
    finally:
        del service._generate
    # Batched (batch_size 8, a 50 ms window): usually one call; on a loaded machine a thread may miss the window,
    # so the check is that requests shared calls, not that all six met in one.
    assert sum(calls) == len(requests) and len(calls) < len(requests) and max(calls) > 1, calls
    assert service.info()["generation_calls"] >= len(requests) + 1
    for a, b in zip(alone, together):
        assert (a["item"], a["raw"], a["stop"], a["generated_tokens"]) == (
            b["item"],
            b["raw"],
            b["stop"],
            b["generated_tokens"],
        )
        # Scores go through bf16 autocast where the CPU has it: a padded batch rounds a little differently.
        assert [c["logprob"] for c in a["candidates"]] == pytest.approx(
            [c["logprob"] for c in b["candidates"]], rel=1e-3
        )


def test_micro_batcher_groups_by_key_up_to_the_batch_size():
    batches = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(5)
        batches.append((key, list(items)))
        if key == "bad":
            raise RuntimeError("model failed")
        return [f"{key}:{i}" for i in items]

    batcher = MicroBatcher(run, max_batch=3, max_wait_s=0.2, max_pending=100)
    jobs = [("a", 0), ("a", 1), ("b", 2), ("a", 3), ("a", 4), ("bad", 5)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = []
        for key, item in jobs:
            futures.append(pool.submit(batcher.submit, key, item))
            time.sleep(0.01)  # arrive in this order, all within the window
        gate.set()
        assert [f.result() for f in futures[:5]] == ["a:0", "a:1", "b:2", "a:3", "a:4"]
        with pytest.raises(RuntimeError, match="model failed"):
            futures[5].result()
    # Oldest key first, at most 3 per call, one key per call; later ones form the next batches.
    assert batches == [("a", [0, 1, 3]), ("b", [2]), ("a", [4]), ("bad", [5])]
    assert batcher.submit("c", 9) == "c:9"  # the worker survived the failure
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("c", 1)


def test_micro_batcher_turns_requests_away_beyond_max_pending():
    gate = threading.Event()
    batcher = MicroBatcher(lambda key, items: (gate.wait(5), items)[1], max_batch=1, max_wait_s=0, max_pending=2)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.submit, 0, "running")  # taken by the worker, blocks in run
        time.sleep(0.1)
        waiting = [pool.submit(batcher.submit, 0, f"w{i}") for i in range(2)]
        time.sleep(0.1)
        with pytest.raises(ServiceBusy, match="2 requests are waiting"):
            batcher.submit(0, "one too many")
        gate.set()
        assert [first.result(), *(w.result() for w in waiting)] == ["running", "w0", "w1"]
    batcher.close()


def test_llama_cpp_engine_serves_what_torch_serves(run, tiny_model_dir, service, sample, tmp_path, monkeypatch):
    """``engine="llama.cpp"`` (an f32 GGUF export): the same answer and scores as the torch engine."""
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("R2REC_CACHE", str(tmp_path / "cache"))
    svc = RecommendService(
        run, model="base", base_model=str(tiny_model_dir), max_new_tokens=8, threads=1, engine="llama.cpp", quant="f32"
    )
    ref = RecommendService(
        run, model="base", base_model=str(tiny_model_dir), max_new_tokens=8, threads=1, precision="fp32"
    )  # the reference in the export's precision
    try:
        titles = [service.titles[c] for c in sample.candidates]
        a, b = ref.recommend(list(sample.history), titles), svc.recommend(list(sample.history), titles)
        assert svc.info()["engine"] == "llama.cpp" and ref.info()["engine"] == "torch"
        assert (b["item"], b["raw"]) == (a["item"], a["raw"])
        assert [c["logprob"] for c in b["candidates"]] == pytest.approx(
            [c["logprob"] for c in a["candidates"]], abs=0.1
        )
        short = svc.recommend(list(sample.history), titles, max_new_tokens=2)  # another budget, same context
        assert short["item"] in sample.candidates
    finally:
        svc.close()
        ref.close()


def test_requests_are_ordered_by_the_runs_prior_like_its_prepared_samples(run, tiny_model_dir, tmp_path, sample):
    """candidate_order: prior: a request is ordered by the prior's model, as the prior files order a prepared
    val sample (the files cover prepared samples only; the service scores requests with the model itself)."""
    from r2rec.baselines.prior import PriorConfig, run_prior
    from r2rec.prompting import PromptConfig

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    run_prior(copy, PriorConfig(model="pop", folds=2))  # pop orders differently from the transition default
    cfg = PromptConfig(candidate_order="prior", context_chains=0, show_candidates=6)
    svc = RecommendService(copy, model="base", base_model=str(tiny_model_dir), prompt=cfg, max_new_tokens=0, threads=1)
    try:
        res = svc.recommend(list(sample.history), list(sample.candidates))
    finally:
        svc.close()
    from_files = PromptBuilder(copy, cfg, graph=svc.graph).prompt(sample)
    assert [c["item"] for c in res["candidates"]] == from_files.candidates
    by_transition = PromptBuilder(copy, PromptConfig(context_chains=0, show_candidates=6), graph=svc.graph)
    assert from_files.candidates != by_transition.prompt(sample).candidates  # the test can tell the orders apart
