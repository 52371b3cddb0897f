"""The engine interface: GGUF export, the llama.cpp engine against the torch reference, and the engine choice."""

from __future__ import annotations

import random

import numpy as np
import pytest

from r2rec.llm.engines import choose_engine, gguf_for, load_generator
from r2rec.llm.generate import DecodingConfig, GenerationConfig, Generator
from r2rec.llm.models import load_model

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the `test` extra (builds llama.cpp)")

WORDS = (
    "Heat Casino Fargo Ronin Alien Brazil Vertigo Psycho Jaws Rocky Annie Hall Taxi Driver Star Wars Empire "
    "Strikes Back Toy Story"
).split()


def _prompts(n: int, seed: int = 0):
    rng = random.Random(seed)

    def title():
        return " ".join(rng.sample(WORDS, rng.randint(1, 3))) + f" ({rng.randint(1950, 1999)})"

    prompts, cands = [], []
    for _ in range(n):
        c = [title() for _ in range(20)]
        history = ", ".join(title() for _ in range(8))
        prompts.append(
            [
                {"role": "system", "content": "You are a recommender."},
                {"role": "user", "content": f"History: {history}\nCandidates:\n" + "\n".join(c)},
            ]
        )
        cands.append(c)
    return prompts, cands


@pytest.fixture(scope="module")
def engines(tiny_model_dir, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("R2REC_CACHE", str(tmp_path_factory.mktemp("cache")))
    cfg = GenerationConfig(max_new_tokens=24, batch_size=8, progress=False, precision="fp32", quant="f32")
    torch_gen, choice_t = load_generator(tiny_model_dir, None, cfg, engine="torch")
    llama_gen, choice_l = load_generator(tiny_model_dir, None, cfg, engine="llama.cpp", quant="f32")
    assert (choice_t.engine, choice_l.engine) == ("torch", "llama.cpp")
    yield torch_gen, llama_gen
    llama_gen.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.parametrize(
    "mode,think,rank",
    [
        ("constrained", True, True),
        ("constrained", False, True),
        ("constrained", True, False),
        ("unconstrained", False, False),
    ],
)
def test_llama_cpp_picks_what_torch_picks(engines, mode, think, rank):
    """Parity: the same answers (>= 95% of prompts) and the same candidate scores within float noise."""
    torch_gen, llama_gen = engines
    prompts, cands = _prompts(20)
    a = torch_gen.generate(prompts, cands, mode=mode, think=think, rank=rank)
    b = llama_gen.generate(prompts, cands, mode=mode, think=think, rank=rank)
    same = sum(x.answer == y.answer for x, y in zip(a, b))
    assert same >= 19, f"{same}/20 answers agree"
    if mode == "constrained":
        assert all(y.valid for y in b)  # constrained by construction
    if rank:
        for x, y in zip(a, b):
            assert x.scores is not None and y.scores is not None
            assert np.allclose(x.scores, y.scores, atol=0.1), (x.scores, y.scores)
    if think:
        texts = sum(x.text == y.text for x, y in zip(a, b))
        assert texts >= 19, f"{texts}/20 completions agree"


def test_score_candidates_matches_torch(engines):
    torch_gen, llama_gen = engines
    prompts, cands = _prompts(4, seed=1)
    thoughts = [['user 1 watched "Heat" and later "Ronin"'], None, ["a thought"], None]
    a = torch_gen.score_candidates(prompts, cands, thoughts)
    b = llama_gen.score_candidates(prompts, cands, thoughts)
    for x, y in zip(a, b):
        assert x.answer == y.answer and np.allclose(x.scores, y.scores, atol=0.1)


def test_export_merges_the_adapter(tiny_model_dir, tmp_path, monkeypatch):
    """A LoRA adapter with non-zero weights changes the logits; the export carries the merged weights."""
    import torch
    from llama_cpp import Llama
    from peft import LoraConfig, get_peft_model

    monkeypatch.setenv("R2REC_CACHE", str(tmp_path / "cache"))
    model, tok = load_model(tiny_model_dir)
    peft = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(tmp_path / "adapter")
    ids = tok("user 1 watched Heat and later Ronin", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        tuned = peft(torch.tensor([ids])).logits[0, -1].numpy()
    path = gguf_for(tiny_model_dir, tmp_path / "adapter", "f32")
    assert gguf_for(tiny_model_dir, tmp_path / "adapter", "f32") == path  # cached by content
    llm = Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.asarray(llm.scores[len(ids) - 1])[: len(tuned)]
    finally:
        llm.close()
    assert np.abs(got - tuned).max() < 0.05
    fresh, _ = load_model(tiny_model_dir)
    with torch.no_grad():
        untuned = fresh(torch.tensor([ids])).logits[0, -1].numpy()
    assert np.abs(untuned - tuned).max() > 0.05  # the adapter mattered, so the check above is not vacuous


def test_engine_choice(monkeypatch):
    import r2rec.llm.llamacpp as lc

    assert choose_engine("auto", "cpu", "llama").engine == "llama.cpp"
    assert choose_engine("auto", "cuda", "llama").engine == "torch"
    assert choose_engine("auto", "cpu", "qwen2").engine == "torch"
    assert choose_engine("torch", "cpu", "llama").engine == "torch"
    monkeypatch.setattr(lc, "available", lambda: False)
    assert choose_engine("auto", "cpu", "llama").reason == "llama-cpp-python not installed"
    with pytest.raises(ValueError, match="llama-cpp-python"):
        choose_engine("llama.cpp", "cpu", "llama")


def test_bad_engine_settings_are_refused():
    with pytest.raises(ValueError, match="engine"):
        DecodingConfig(engine="vllm2")
    with pytest.raises(ValueError, match="quant"):
        DecodingConfig(quant="q4")


def test_torch_generator_is_the_reference_type(engines):
    torch_gen, llama_gen = engines
    assert type(torch_gen) is Generator and isinstance(llama_gen, Generator)
    assert llama_gen.compute.precision == "gguf-f32"


def test_export_command_writes_a_gguf_of_the_run_model(tiny_model_dir, tmp_path, monkeypatch):
    """``r2rec export --run R --model sft``: the run's adapter merged into its base, readable as a Llama GGUF."""
    import gguf
    from peft import LoraConfig, get_peft_model

    from r2rec.cli import main

    monkeypatch.setenv("R2REC_CACHE", str(tmp_path / "cache"))
    model, _ = load_model(tiny_model_dir)
    adapter = tmp_path / "run" / "checkpoints" / "sft" / "final"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    out = tmp_path / "sft.gguf"
    assert main(["export", "--run", str(tmp_path / "run"), "--model", "sft", "--quant", "f16", "--out", str(out)]) == 0
    reader = gguf.GGUFReader(out)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight"} <= names
    assert main(["export", "--run", str(tmp_path / "run"), "--model", "rl"]) == 2  # no rl checkpoint: one line


def test_configured_generators_share_one_context(engines):
    _, llama_gen = engines
    prompts, cands = _prompts(2, seed=2)
    short = llama_gen.configured(GenerationConfig(max_new_tokens=3, progress=False, precision="fp32", quant="f32"))
    outs = short.generate(prompts, cands, mode="constrained", think=True)
    assert all(o.n_generated <= 3 + 10 for o in outs) and short.llm is llama_gen.llm
    short.close()  # not the owner: the shared context stays open
    assert llama_gen.llm is not None and llama_gen.config.max_new_tokens == 24
    assert len(llama_gen.generate(prompts, cands, mode="constrained", think=True)) == 2
