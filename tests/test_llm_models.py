"""The model registry: local paths, hub ids, errors, autocast, and (slow) the real SmolLM2 from its package."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r2rec.llm import models


def test_resolve_local_path_and_load(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == Path(tiny_model_dir)
    model, tok = models.load_model(tiny_model_dir)
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert model.config.num_hidden_layers == 2 and not model.training
    assert tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    ).endswith("<|im_start|>assistant\n")


def test_resolve_errors_and_hub_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.resolve_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve_model(str(tmp_path / "missing"))
    assert models.resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_load_model_rejects_a_folder_that_is_not_an_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        models.load_model(tiny_model_dir, adapter=tmp_path)


def test_load_model_applies_a_peft_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, _ = models.load_model(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    model, _ = models.load_model(tiny_model_dir, adapter=tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3]])
    plain, _ = models.load_model(tiny_model_dir)
    with torch.inference_mode():
        assert not torch.allclose(model(ids).logits, plain(ids).logits)  # the adapter changes the output


def test_inference_merges_the_adapter_and_runs_in_the_compute_precision(tiny_model_dir, tmp_path):
    """load_generator (eval, recommend, serve, the hf: teacher) folds the adapter into the weights and casts them to
    the compute precision; in fp32 it scores the candidates as the unmerged adapter does."""
    from peft import LoraConfig, get_peft_model

    from r2rec.llm.engines import load_generator
    from r2rec.llm.generate import GenerationConfig, Generator

    base, _ = models.load_model(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    msgs = [[{"role": "user", "content": f"user {i} watched Heat and Ronin. Next?"}] for i in range(3)]
    titles = [["Heat", "Alien", "Fargo (1996)"]] * 3

    def scores(gen):
        return [c.scores for c in gen.score_candidates(msgs, titles)]

    def cfg(precision):
        return GenerationConfig(precision=precision, progress=False)

    unmerged, tok = models.load_model(tiny_model_dir, adapter=tmp_path / "adapter")
    reference = scores(Generator(unmerged, tok, cfg("fp32")))
    fp32, _ = load_generator(tiny_model_dir, tmp_path / "adapter", cfg("fp32"), engine="torch")
    assert not any("lora" in name for name, _ in fp32.model.named_modules())  # merged
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert torch.allclose(torch.tensor(scores(fp32)), torch.tensor(reference), atol=1e-4)
    plain = scores(load_generator(tiny_model_dir, None, cfg("fp32"), engine="torch")[0])
    assert not torch.allclose(torch.tensor(plain), torch.tensor(reference), atol=1e-2)  # the adapter mattered

    bf16, _ = load_generator(tiny_model_dir, tmp_path / "adapter", cfg("bf16"), engine="torch")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert torch.allclose(torch.tensor(scores(bf16)), torch.tensor(reference), atol=0.5)  # bf16 rounding only


@pytest.mark.real_model
def test_real_smollm2_through_the_registry():
    """Loads SmolLM2-135M (converted from the package's GGUF on first use) and answers among candidates."""
    from r2rec.llm.generate import GenerationConfig, Generator

    try:
        models.smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model, tok = models.load_model("smollm2-135m")
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == len(tok)
    gen = Generator(model, tok, GenerationConfig(max_new_tokens=12, progress=False))
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    free = gen.generate([msgs], mode="unconstrained")[0]
    assert "Paris" in free.text  # the converted weights are the real model, not noise
    titles = ["Toy Story (1995)", "Heat (1995)", "Star Wars (1977)"]
    out = gen.generate([msgs], [titles], think=True, rank=True)[0]
    assert out.answer is not None and out.answer_title in titles and len(out.scores) == 3
