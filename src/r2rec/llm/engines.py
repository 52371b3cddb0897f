"""One entry point for every generator outside a training step: :func:`load_generator`.

Eval, ``recommend``/``serve`` and the ``hf:`` teacher ask for a generator by model, adapter and decoding settings
and get an object with :class:`r2rec.llm.generate.Generator`'s methods (``generate``, ``score_candidates``,
``prompt_ids``), computed by one of the engines:

* ``torch``: the reference decode loop of :mod:`r2rec.llm.generate` (any Hugging Face causal LM, CPU or CUDA);
* ``llama.cpp``: :mod:`r2rec.llm.llamacpp` on a GGUF export of the model with its adapter merged
  (:mod:`r2rec.llm.export`), built once and cached by content under ``$R2REC_CACHE/gguf``;
* ``vllm``: :mod:`r2rec.llm.vllm_engine` on a CUDA GPU (``pip install vllm``), the adapter applied by vLLM's LoRA
  support. Only when asked for; untested here (no GPU): a stand-in ``vllm`` module checks the requests it builds.

The default is ``torch``: the reference, and batched. ``engine: auto`` picks llama.cpp on a CPU when
``llama-cpp-python`` is installed and the model is a Llama (the default SmolLM2 is), else torch. The choice and its
reason are logged and written with the results (docs/results.md compares the two engines).
``auto`` never picks vLLM: it is the field's engine on GPUs, but r2rec has not run it (see README, "On a GPU").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .generate import GenerationConfig, Generator

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "llama.cpp", "vllm")


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # "torch", "llama.cpp" or "vllm"
    reason: str

    def describe(self) -> str:
        return f"{self.engine} ({self.reason})"


def check_engine(engine: str, quant: str, where: str) -> None:
    """Reject an unknown engine or quantisation when a config is built."""
    from .export import QUANTS

    if engine not in ENGINES:
        raise ValueError(f"{where}.engine: expected one of {ENGINES}, got {engine!r}")
    if quant not in QUANTS:
        raise ValueError(f"{where}.quant: expected one of {QUANTS}, got {quant!r}")


def choose_engine(engine: str, device: str, model_type: str | None) -> EngineChoice:
    """The engine for ``engine`` (a setting) on ``device`` for a model of ``model_type``."""
    from .llamacpp import available

    if engine == "torch":
        return EngineChoice("torch", "asked for")
    if engine == "vllm":
        from . import vllm_engine

        if not vllm_engine.available():
            raise ValueError(vllm_engine.missing_message())
        if device != "cuda":
            raise ValueError(
                f"engine: vllm runs on a CUDA GPU; this stage runs on {device}: use engine: torch or llama.cpp"
            )
        return EngineChoice("vllm", "asked for")
    if engine == "llama.cpp":
        if not available():
            raise ValueError(
                "engine: llama.cpp needs llama-cpp-python (`pip install -e '.[engine]'`, builds "
                "llama.cpp from source) or use engine: torch"
            )
        if model_type not in (None, "llama"):
            raise ValueError(f"engine: llama.cpp exports Llama models only; this one is {model_type!r}")
        return EngineChoice("llama.cpp", "asked for")
    if device != "cpu":
        return EngineChoice("torch", f"device {device}")
    if not available():
        return EngineChoice("torch", "llama-cpp-python not installed")
    if model_type != "llama":
        return EngineChoice("torch", f"model type {model_type!r} has no GGUF export")
    return EngineChoice("llama.cpp", "CPU, llama-cpp-python installed")


def _model_type(path) -> str | None:
    import json

    config = Path(path) / "config.json"
    if config.exists():
        return json.loads(config.read_text()).get("model_type")
    return None  # a hub id: transformers resolves it; the torch engine handles any architecture


def gguf_for(model_name: str | os.PathLike, adapter: str | os.PathLike | None, quant: str) -> Path:
    """The cached GGUF export of ``model_name`` with ``adapter`` merged, built on first use.

    Keyed by the sha256 of every weight file (base and adapter) and the quantisation: a retrained adapter gets
    a new file, an unchanged one is reused across runs.
    """
    from r2rec.io import fingerprint, sha256_file

    from .export import export_gguf
    from .models import cache_dir, load_model, resolve_model

    base = resolve_model(model_name)
    weights = sorted(Path(base).glob("*.safetensors")) if isinstance(base, Path) else []
    if adapter is not None:
        weights += sorted(Path(adapter).glob("*.safetensors"))
    key = fingerprint(
        {
            "model": str(model_name) if not weights else None,
            "quant": quant,
            "weights": [sha256_file(p) for p in weights],
        }
    )[:16]
    out = cache_dir().parent / "gguf" / f"{Path(str(model_name)).name}-{key}.{quant}.gguf"
    if not out.exists():
        model, tok = load_model(model_name, adapter=adapter, merge=True)
        export_gguf(model, tok, out, quant=quant, name=Path(str(model_name)).name)
    return out


def load_generator(
    model_name: str | os.PathLike,
    adapter: str | os.PathLike | None,
    config: GenerationConfig,
    device: str = "cpu",
    engine: str = "auto",
    quant: str = "f16",
    threads: int = 0,
) -> tuple[Generator, EngineChoice]:
    """``(generator, choice)``: a generator for the model (+ adapter) on the chosen engine.

    ``device``: the resolved device (``cpu``/``cuda``, :func:`r2rec.hardware.resolve`); ``config.precision``
    applies to the torch engine and vLLM, ``quant`` to llama.cpp.
    """
    from .models import load_model, load_tokenizer, resolve_model

    choice = choose_engine(engine, device, _model_type(resolve_model(model_name)))
    if choice.engine == "torch":
        from r2rec.hardware import resolve

        # Inference only: the adapter merged and the weights in the compute precision (bf16 where the machine runs
        # it natively: no per-call casts, half the bytes per decode step; 1.8x faster evaluation on 2 cores).
        dtype = resolve(config.precision, device, "generation").dtype
        model, tok = load_model(model_name, adapter=adapter, device=device, dtype=dtype, merge=True)
        return Generator(model, tok, config), choice
    if choice.engine == "vllm":
        from .vllm_engine import VllmGenerator

        base = resolve_model(model_name)
        return VllmGenerator(base, load_tokenizer(model_name), config, adapter=adapter), choice
    from .llamacpp import LlamaCppGenerator

    path = gguf_for(model_name, adapter, quant)
    return LlamaCppGenerator(path, load_tokenizer(model_name), config, threads=threads), choice
