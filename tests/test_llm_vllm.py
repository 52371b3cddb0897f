"""The vLLM engine: its guard, its selection, and the requests it sends, against a stand-in ``vllm`` module.

vLLM is not installed here and there is no GPU, so vLLM itself is never run. The stand-in has vLLM's offline API
(``LLM.generate`` on token-id prompts with ``SamplingParams``, ``StructuredOutputsParams(choice=...)``,
``prompt_logprobs``, ``LoRARequest``) and computes its answers with the tiny random torch model: greedy decoding
up to a stop string, the log-probs of prompt tokens, a choice among given strings. So the tests check what the
wrapper asks (prompts, stop strings, sampling settings, the choices, the scoring requests) and that it reads the
answers back into the torch loop's completions: with ``rank=True`` and greedy decoding, the same answers,
thoughts and scores as the torch engine.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from r2rec.config import build
from r2rec.grammar import format_completion
from r2rec.llm.engines import ENGINES, choose_engine, load_generator
from r2rec.llm.generate import DecodingConfig, GenerationConfig, Generator
from r2rec.thoughts.teachers import TeacherOptions

TITLES = ["Heat (1995)", "Casino (1995)", "Fargo (1996)", "Ronin (1998)", "Heat (1995)", "Alien (1979)"]


def _prompts(n: int):
    prompts, cands = [], []
    for k in range(n):
        c = TITLES[k % 2 :] + TITLES[: k % 2]
        prompts.append(
            [
                {"role": "system", "content": "You are a recommender."},
                {"role": "user", "content": f"User {k} watched Jaws and Rocky.\nCandidates:\n" + "\n".join(c)},
            ]
        )
        cands.append(c)
    return prompts, cands


# -- the guard and the selection --------------------------------------------------------------------------
def test_without_vllm_asking_for_it_fails_in_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, find_spec answers None
    from r2rec.llm import vllm_engine

    assert not vllm_engine.available()
    for device in ("cuda", "cpu"):
        with pytest.raises(ValueError) as err:
            choose_engine("vllm", device, "llama")
        assert str(err.value) == (
            "engine: vllm needs the vllm package (`pip install vllm`; Linux with a CUDA GPU), or use engine: torch"
        )
    with pytest.raises(ValueError, match="pip install vllm"):  # before any model is loaded
        load_generator("no-such-model", None, GenerationConfig(progress=False), device="cuda", engine="vllm")
    with pytest.raises(ValueError, match="pip install vllm"):
        vllm_engine.VllmGenerator("m", tokenizer=None)
    # auto never picks it, installed or not
    assert choose_engine("auto", "cuda", "llama").engine == "torch"


def test_vllm_is_an_engine_of_every_setting_and_nothing_else_is():
    assert "vllm" in ENGINES
    assert DecodingConfig(engine="vllm").engine == "vllm"
    assert TeacherOptions(engine="vllm").engine == "vllm"
    from r2rec.eval.runner import EvalConfig

    assert build(EvalConfig, {"engine": "vllm"}).engine == "vllm"
    with pytest.raises(ValueError, match="engine"):
        DecodingConfig(engine="vLLM")
    import argparse

    from r2rec.serve import add_service_arguments

    p = argparse.ArgumentParser()
    add_service_arguments(p)
    assert p.parse_args(["--run", "r", "--engine", "vllm"]).engine == "vllm"


def test_vllm_runs_on_a_gpu_only(fake_vllm):
    assert choose_engine("vllm", "cuda", "llama").engine == "vllm"
    assert choose_engine("vllm", "cuda", "qwen2").engine == "vllm"  # any architecture vLLM supports
    with pytest.raises(ValueError, match="CUDA GPU; this stage runs on cpu"):
        choose_engine("vllm", "cpu", "llama")


# -- a stand-in vllm -----------------------------------------------------------------------------------------
@dataclass
class _Logprob:
    logprob: float


@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: object = None


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Completion]
    prompt_logprobs: list | None = None


class _Params:
    def __init__(self, **kw):
        self.__dict__.update({"prompt_logprobs": None, "stop": None, "structured_outputs": None, **kw})


class _Choice:
    def __init__(self, choice=None, **kw):
        self.choice = choice


class _LoRARequest:
    def __init__(self, name, id, path):
        self.name, self.id, self.path = name, id, path


@dataclass
class _Fake:
    model_dir: str
    llms: list = field(default_factory=list)


class _LLM:
    """vLLM's offline engine, played by the tiny torch model (greedy; enough for what the tests ask)."""

    fake: _Fake

    def __init__(self, **kw):
        from r2rec.llm.models import load_model

        self.kw = kw
        self.calls: list[tuple[list, list, object]] = []
        self.model, self.tok = load_model(kw["model"])
        self.fake.llms.append(self)

    def _logits(self, ids):
        import torch

        with torch.inference_mode():
            return self.model(torch.tensor([ids])).logits[0].float()

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        assert isinstance(params, list) and len(params) == len(prompts)
        self.calls.append((prompts, params, lora_request))
        return [self._one(list(p["prompt_token_ids"]), sp) for p, sp in zip(prompts, params)]

    def _one(self, ids, sp):
        import torch

        if sp.prompt_logprobs is not None:
            lp = torch.log_softmax(self._logits(ids), -1)
            plp = [None] + [{t: _Logprob(float(lp[j - 1, t]))} for j, t in enumerate(ids) if j > 0]
            return _RequestOutput(ids, [_Completion("", [int(lp[-1].argmax())], "length")], plp)
        if sp.structured_outputs is not None:
            # Greedy over the choices' own tokenisations (what constrained greedy decoding does when the model
            # follows them), one token at a time.
            seqs = {c: self.tok(c, add_special_tokens=False)["input_ids"] for c in sp.structured_outputs.choice}
            live, out = list(seqs), []
            while True:
                done = [c for c in live if len(seqs[c]) == len(out)]
                if done:
                    return _RequestOutput(ids, [_Completion(done[0], out, "stop")])
                logits = self._logits(ids + out)[-1]
                nxt = max({seqs[c][len(out)] for c in live}, key=lambda t: float(logits[t]))
                out.append(nxt)
                live = [c for c in live if seqs[c][len(out) - 1] == nxt]
        out: list[int] = []
        eos = self.tok.eos_token_id
        while len(out) < sp.max_tokens:
            t = int(self._logits(ids + out)[-1].argmax())
            out.append(t)
            if t == eos and not sp.ignore_eos:
                return _RequestOutput(ids, [_Completion(self.tok.decode(out[:-1]), out, "stop", None)])
            text = self.tok.decode(out)
            hit = [s for s in sp.stop if s in text]
            if hit:
                return _RequestOutput(ids, [_Completion(text, out, "stop", hit[0])])
        return _RequestOutput(ids, [_Completion(self.tok.decode(out), out, "length")])


@pytest.fixture(scope="module")
def fake_vllm(tiny_model_dir):
    fake = _Fake(str(tiny_model_dir))
    llm_cls = type("LLM", (_LLM,), {"fake": fake})
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.__version__ = "0.0-stand-in"
    vllm.LLM, vllm.SamplingParams = llm_cls, _Params
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams, sp.SamplingParams = _Choice, _Params
    lora, lora_request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = _LoRARequest
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in {
            "vllm": vllm,
            "vllm.sampling_params": sp,
            "vllm.lora": lora,
            "vllm.lora.request": lora_request,
        }.items():
            mp.setitem(sys.modules, name, mod)
        yield fake


CFG = GenerationConfig(max_new_tokens=10, batch_size=4, progress=False, precision="fp32")


@pytest.fixture(scope="module")
def _engines(fake_vllm, tiny_model_dir):
    torch_gen, _ = load_generator(tiny_model_dir, None, CFG, engine="torch")
    vllm_gen, choice = load_generator(tiny_model_dir, None, CFG, device="cuda", engine="vllm")
    assert choice.engine == "vllm" and isinstance(vllm_gen, Generator)
    return torch_gen, vllm_gen, fake_vllm.llms[-1]


@pytest.fixture
def gens(_engines):
    """The torch and the vLLM generator on the tiny model, and the stand-in engine with no call recorded yet."""
    _engines[2].calls.clear()
    return _engines


# -- the requests and how their answers are read --------------------------------------------------------------
def test_the_engine_is_built_with_the_run_settings(gens, tiny_model_dir):
    _, gen, llm = gens
    assert llm.kw == {
        "model": str(tiny_model_dir),
        "tokenizer": str(tiny_model_dir),
        "dtype": "float32",
        "seed": 0,
        "enable_prefix_caching": True,
    }
    assert gen.compute.device == "cuda" and "vLLM 0.0-stand-in" in gen.compute.reason


def test_ranked_greedy_answers_are_the_torch_loops(gens):
    torch_gen, gen, llm = gens
    prompts, cands = _prompts(3)
    want = torch_gen.generate(prompts, cands, rank=True)
    got = gen.generate(prompts, cands, rank=True)
    for w, g in zip(want, got):
        assert (g.answer, g.answer_title, g.thoughts, g.text, g.stop) == (
            w.answer,
            w.answer_title,
            w.thoughts,
            w.text,
            w.stop,
        )
        assert g.scores == pytest.approx(w.scores, abs=1e-4)
    # Two calls: the reasoning of all 3 prompts at once, then one scoring request per (prompt, candidate).
    (reason_prompts, reason_params, _), (score_prompts, score_params, _) = llm.calls
    assert [p["prompt_token_ids"] for p in reason_prompts] == [
        torch_gen.prompt_ids(m) + torch_gen.think_start for m in prompts
    ]
    p = reason_params[0]
    assert (p.stop, p.max_tokens, p.temperature, p.seed, p.include_stop_str_in_output) == (
        ["</think>", "<answer>"],
        10,
        0.0,
        0,
        True,
    )
    assert len(score_prompts) == 3 * len(TITLES)
    assert all(s.prompt_logprobs == 0 and s.max_tokens == 1 for s in score_params)
    # Each scoring prompt is the prompt + the canonical completion naming one candidate.
    ids = score_prompts[0]["prompt_token_ids"]
    text = torch_gen.tok.decode(ids[len(torch_gen.prompt_ids(prompts[0])) :])
    assert text == format_completion(got[0].thoughts, cands[0][0])


def test_score_candidates_matches_torch(gens):
    torch_gen, gen, _ = gens
    prompts, cands = _prompts(2)
    thoughts = [["user 3 watched Heat."], None]
    want = torch_gen.score_candidates(prompts, cands, thoughts)
    got = gen.score_candidates(prompts, cands, thoughts)
    for w, g in zip(want, got):
        assert g.scores == pytest.approx(w.scores, abs=1e-4) and g.answer == w.answer


def test_unconstrained_text_is_the_torch_loops(gens):
    torch_gen, gen, llm = gens
    prompts, cands = _prompts(2)
    want = torch_gen.generate(prompts, cands, mode="unconstrained")
    got = gen.generate(prompts, cands, mode="unconstrained")
    assert [(g.text, g.stop, g.answer) for g in got] == [(w.text, w.stop, w.answer) for w in want]
    (_, params, _) = llm.calls[0]
    assert params[0].stop == ["</answer>"]


def test_unranked_answers_come_from_a_choice_among_the_candidates(gens):
    torch_gen, gen, llm = gens
    prompts, cands = _prompts(2)
    got = gen.generate(prompts, cands, think=False)  # the direct format: the answer at once
    (answer_prompts, params, _) = llm.calls[-1]
    assert len(llm.calls) == 1  # no reasoning call in direct mode
    for k, (c, g) in enumerate(zip(cands, got)):
        choices = params[k].structured_outputs.choice
        assert len(choices) == len(set(c))  # the duplicated title is one choice
        # The prompt ends where the candidates' completions part; the choices are what is left of each.
        prefix = torch_gen.tok.decode(answer_prompts[k]["prompt_token_ids"][len(torch_gen.prompt_ids(prompts[k])) :])
        assert sorted(prefix + x for x in choices) == sorted({f"<answer>{t}</answer>" for t in c})
        assert g.answer_title in c and g.text == f"<answer>{g.answer_title}</answer>"
        assert g.ambiguous == (c.count(g.answer_title) > 1)
        assert g.answer is None if g.ambiguous else c[g.answer] == g.answer_title


def test_sampling_settings_reach_every_request(fake_vllm, tiny_model_dir):
    cfg = GenerationConfig(
        max_new_tokens=4, progress=False, do_sample=True, temperature=0.7, top_k=5, top_p=0.9, seed=3
    )
    gen, _ = load_generator(tiny_model_dir, None, cfg, device="cuda", engine="vllm")
    llm = fake_vllm.llms[-1]
    llm._one = lambda ids, sp: _RequestOutput(  # the stand-in does not sample: it answers the second choice
        ids,
        [
            _Completion(sp.structured_outputs.choice[1], [1], "stop")
            if sp.structured_outputs
            else _Completion("x", [87], "length")
        ],
    )
    prompts, cands = _prompts(1)
    out = gen.generate(prompts, cands)
    assert out[0].valid and out[0].answer_title == cands[0][1]
    for _, params, _ in llm.calls:
        for p in params:
            assert (p.temperature, p.top_k, p.top_p, p.seed) == (0.7, 5, 0.9, 3)


def test_an_adapter_is_a_lora_request(fake_vllm, tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    from r2rec.llm.models import load_tokenizer
    from r2rec.llm.vllm_engine import VllmGenerator

    gen = VllmGenerator(tiny_model_dir, load_tokenizer(tiny_model_dir), CFG, adapter=adapter)
    llm = fake_vllm.llms[-1]
    assert llm.kw["enable_lora"] is True and llm.kw["max_lora_rank"] == 8
    prompts, cands = _prompts(1)
    gen.generate(prompts, cands, think=False)
    (_, _, lora) = llm.calls[0]
    assert isinstance(lora, _LoRARequest) and lora.path == str(adapter)


def test_vllm_before_0_12_gets_guided_decoding(fake_vllm, monkeypatch):
    old = types.ModuleType("vllm.sampling_params")
    old.GuidedDecodingParams = _Choice
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", old)
    from r2rec.llm.vllm_engine import choice_params

    kw = choice_params(["a", "b"])
    assert list(kw) == ["guided_decoding"] and kw["guided_decoding"].choice == ["a", "b"]
