"""Teachers behind one interface: ``write(requests: list[HopRequest]) -> list[str]`` (one thought each).

- ``template``: deterministic, offline thoughts built from the revealed chain evidence (the default);
- ``hf:<model>``: any local causal LM through :func:`r2rec.llm.models.load_model` (batched generation);
- ``openai:<model>``: any OpenAI-compatible chat endpoint (:mod:`r2rec.thoughts.openai_teacher`, which
  implements the interface defined here).

:func:`r2rec.thoughts.stage.make_teacher` builds one from its name; it lives with the stage, not here, so that
the OpenAI teacher imports this module and nothing imports back.

Every teacher's output goes through the same filter (answer = target, every citation real), so a teacher
that invents interactions only costs kept traces, never faithfulness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from r2rec.grammar import cite
from r2rec.thoughts.faithfulness import position_words
from r2rec.thoughts.progressive import HopRequest, teacher_messages

log = logging.getLogger(__name__)


@dataclass
class TeacherOptions:
    """Settings shared by the teachers (each uses the ones that apply to it)."""

    max_tokens: int = 96  # LLM teachers: new tokens per thought
    temperature: float = 0.0  # LLM teachers: 0 = greedy
    batch_size: int = 8  # hf: prompts decoded together
    concurrency: int = 4  # openai: requests in flight (over the whole fleet)
    timeout_s: float = 120.0  # openai: per request
    max_retries: int = 6  # openai: retries on connection errors, 5xx and 429
    backoff_s: float = 1.0  # openai: first retry delay, doubled each time (capped at 60 s)
    # openai: default $R2REC_OPENAI_BASE_URL, else https://api.openai.com/v1; several URLs separated by spaces
    # make a fleet of servers of the same model (each request goes to the one with the fewest in flight)
    base_url: str | None = None
    seed: int = 0
    engine: str = "torch"  # hf: torch, llama.cpp, vllm (a CUDA GPU) or auto (r2rec.llm.engines)

    def __post_init__(self):
        from r2rec.llm.engines import ENGINES

        if self.engine not in ENGINES:
            raise ValueError(f"TeacherOptions.engine: expected one of {ENGINES}, got {self.engine!r}")
        for name in ("max_tokens", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"TeacherOptions.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("temperature", "max_retries", "backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"TeacherOptions.{name}: must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"TeacherOptions.timeout_s: must be > 0, got {self.timeout_s}")


class TeacherError(RuntimeError):
    """A teacher request failed for good: a non-retryable answer (a 401, a bad request), or its retries ran out
    (``transient``: a rerun may succeed). Completed answers stay cached. Its message never holds a credential."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class Teacher:
    """``write`` answers one thought per request; a teacher behind a network may answer ``None`` for a request
    that failed for now (its retries ran out): :attr:`failed` counts those, :attr:`last_error` says why."""

    name: str = ""
    failed: int = 0
    last_error: str = ""

    def write(self, requests: Sequence[HopRequest]) -> Sequence[str | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TemplateTeacher(Teacher):
    """Readable, deterministic thoughts from the revealed evidence; every interaction is cited checkably."""

    name = "template"

    def write(self, requests: Sequence[HopRequest]) -> list[str]:
        return [self._thought(r) for r in requests]

    @staticmethod
    def _thought(r: HopRequest) -> str:
        # Short on purpose: every token of a trace is paid again in SFT, GRPO and each evaluation.
        v = r.revealed
        if r.hop == 1:
            back = v["history_len"] - 1 - v["slot_a"]
            return f"{_cap(cite(None, r.verb, v['title_a']))} {position_words(back)}."
        if r.hop == 2:
            return f"{_cap(cite(v['u1'], r.verb, v['title_a']))} too and shares {v['n_shared']} {r.noun} with the user."
        gap = v["gap"]
        after = "right after" if gap == 1 else f"{gap} later"
        return f'{_cap(cite(v["u1"], r.verb, v["title_a"], v["title_b"]))} ({after}), so "{v["title_b"]}" is next.'


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class HFTeacher(Teacher):
    """A local causal LM (``hf:<name or path>``; ``hf:`` alone = the default SmolLM2), batched, greedy by default."""

    def __init__(self, model: str, options: TeacherOptions):
        from r2rec.hardware import resolve
        from r2rec.llm.engines import load_generator
        from r2rec.llm.generate import GenerationConfig
        from r2rec.llm.models import DEFAULT_MODEL

        self.model_name = model or DEFAULT_MODEL
        self.name = f"hf:{self.model_name}"
        compute = resolve("auto", "auto", "thoughts")
        self.generator, engine = load_generator(
            self.model_name,
            None,
            GenerationConfig(
                max_new_tokens=options.max_tokens,
                batch_size=options.batch_size,
                do_sample=options.temperature > 0,
                temperature=options.temperature if options.temperature > 0 else 1.0,
                seed=options.seed,
                precision=compute.precision,
                progress=False,
            ),
            device=compute.device,
            engine=options.engine,
        )
        log.info(f"[thoughts] {self.name} compute: {self.generator.compute.describe()}; engine {engine.describe()}")

    def write(self, requests: Sequence[HopRequest]) -> list[str]:
        if not requests:
            return []
        outs = self.generator.generate([teacher_messages(r) for r in requests], mode="unconstrained")
        return [o.text for o in outs]
