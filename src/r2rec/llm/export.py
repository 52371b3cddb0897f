"""Export a model (and its LoRA adapter, merged) to one GGUF file for the llama.cpp engine.

Why our own writer rather than llama.cpp's ``convert_hf_to_gguf.py``: that script ships with llama.cpp's sources,
not with any package on the registries; the ``gguf`` package (which transformers already uses to read GGUF) has
the writer and the quantisers, and a Llama needs only the tensor names below and the rotary permutation of
the query/key projections that llama.cpp expects (the inverse of what transformers undoes when it loads a GGUF).

Supported: ``LlamaForCausalLM`` checkpoints (SmolLM2, TinyLlama, Llama 2/3 and their fine-tunes) with a
byte-level BPE tokenizer. The vocabulary is written from the Hugging Face tokenizer; r2rec always feeds token
ids it tokenised itself, so the GGUF's own pre-tokenizer setting does not change r2rec's results.

``quant``: ``f16`` (the default: half of f32's bytes, the same greedy output as fp32 in
``bench/bench_generation.py`` and the fastest llama.cpp decode there), ``f32`` (bit-exact weights: the parity
reference) or ``q8_0`` (8-bit blocks of 32, the smallest; it changed some answers).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

QUANTS = ("f32", "f16", "q8_0")


def _permute(w, n_head: int):
    """llama.cpp's rotary layout of a query/key projection (``n_head`` heads of this projection)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(tok) -> tuple[list[str], list[int], list[str]]:
    """``(tokens, token types, merges)`` of a byte-level BPE tokenizer, in id order."""
    import gguf

    n = len(tok)
    id_to_tok = {i: t for t, i in tok.get_vocab().items()}
    special = set(tok.all_special_ids)
    added = {i for i in getattr(tok, "added_tokens_decoder", {})}
    tokens, types = [], []
    for i in range(n):
        t = id_to_tok.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(t)
            types.append(
                gguf.TokenType.CONTROL
                if i in special
                else gguf.TokenType.USER_DEFINED
                if i in added
                else gguf.TokenType.NORMAL
            )
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export supports BPE tokenizers; this one is {model.get('type')!r}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def export_gguf(model, tokenizer, out: str | os.PathLike, quant: str = "f16", name: str = "r2rec") -> Path:
    """Write ``model`` (a transformers Llama, adapters already merged) as a GGUF file at ``out`` (atomically)."""
    import gguf
    import numpy as np

    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, got {quant!r}")
    cfg = model.config
    if cfg.model_type != "llama":
        raise ValueError(
            f"GGUF export supports Llama models (SmolLM2, TinyLlama, Llama 2/3); this one is "
            f"{cfg.model_type!r}: use vLLM or the torch engine for it"
        )
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[quant]

    tensors: list[tuple[str, np.ndarray]] = [
        ("token_embd.weight", sd["model.embed_tokens.weight"]),
        ("output_norm.weight", sd["model.norm.weight"]),
    ]
    if "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        tensors.append(("output.weight", sd["lm_head.weight"]))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors += [
            (f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], n_head)),
            (f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], n_kv)),
            (f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]),
        ]
        if any(k.startswith(p) and k.endswith(".bias") for k in sd):
            raise ValueError(f"GGUF export: layer {i} has bias terms, which this Llama writer does not map")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        w = gguf.GGUFWriter(path=tmp, arch="llama")
        w.add_name(name)
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_hidden_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        rope = getattr(cfg, "rope_parameters", None) or {}
        w.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
        w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[quant])
        tokens, types, merges = _vocab(tokenizer)
        w.add_vocab_size(len(tokens))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        for key, value in (
            ("bos", tokenizer.bos_token_id),
            ("eos", tokenizer.eos_token_id),
            ("pad", tokenizer.pad_token_id),
        ):
            if value is not None:
                getattr(w, f"add_{key}_token_id")(int(value))
        if getattr(tokenizer, "chat_template", None):
            w.add_chat_template(tokenizer.chat_template)
        for tname, arr in tensors:
            if arr.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:  # norms stay f32, as llama.cpp does
                w.add_tensor(tname, arr.astype(np.float32))
            elif qtype == gguf.GGMLQuantizationType.F16:
                w.add_tensor(tname, arr.astype(np.float16))
            else:
                w.add_tensor(tname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)  # a reader never sees a half-written model
    finally:
        tmp.unlink(missing_ok=True)
    log.info(f"[export] wrote {out} ({quant}, {out.stat().st_size / 2**20:.0f} MiB)")
    return out
