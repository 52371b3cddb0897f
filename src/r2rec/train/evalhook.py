"""The periodic val HR@1 used for learning curves during SFT and GRPO.

The val prompts must be rendered exactly like the training prompts, so the prompt settings are resolved in
one place (:func:`r2rec.prompting.prompt_config`): the stage's own ``prompt`` overrides when given, else the
settings the ``thoughts`` stage recorded in its manifest (the ones the stored trace prompts were built with).

The curve uses the LLM layer's constrained decoding (:class:`r2rec.llm.generate.Generator`): greedy
reasoning (``iot``) or none (``direct``), then the answer inside the trie of candidate titles, as
``r2rec eval`` does, on a small fixed val subset.
"""

from __future__ import annotations

import logging

from r2rec.runs import RunDir

from .config import TrainConfig

log = logging.getLogger(__name__)


def make_val_evaluator(run: RunDir, cfg: TrainConfig, variant: str):
    """``evaluate(model, tokenizer) -> metrics`` on the first ``cfg.eval_samples`` val samples of ``cfg.eval_seed``,
    decoded with ``cfg.val_generation()``.

    Metrics: ``val_hr1`` (answer = target), ``val_top_first`` (share of answers that are the prompt's first
    candidate, the top of the train-only heuristic that orders it: how much the model just follows it), and
    ``val_first_hr1`` (HR@1 of that heuristic on the same subset, the reference line). Returns None when
    the run has no val split.
    """
    from r2rec.data.schema import PreparedData
    from r2rec.prompting import PromptBuilder, prompt_config

    prepared = PreparedData(run.prepared)
    try:
        samples = prepared.samples("val", cfg.eval_seed)[: cfg.eval_samples]
    except FileNotFoundError:
        log.warning(f"[val] no val samples for seed {cfg.eval_seed}: no val HR@1 curve")
        return None
    if not samples:
        return None
    pcfg = prompt_config(run, cfg.prompt)
    builder = PromptBuilder(run.root, pcfg, prepared=prepared)
    prompts = builder.build(samples)
    messages = [p.messages for p in prompts]
    titles = [[builder.title(c) for c in p.candidates] for p in prompts]
    # -1: the target is not among the candidates shown (show_candidates), so no answer can hit it.
    targets = [p.candidates.index(s.target) if s.target in p.candidates else -1 for p, s in zip(prompts, samples)]
    first_hr1 = sum(t == 0 for t in targets) / len(samples)
    think = variant == "iot"

    def evaluate(model, tokenizer) -> dict:
        from r2rec.llm.generate import Generator

        gen = Generator(model, tokenizer, cfg.val_generation())
        outs = gen.generate(messages, titles, mode="constrained", think=think)
        n = len(outs)
        return {
            "val_hr1": sum(o.answer == t for o, t in zip(outs, targets)) / n,
            "val_top_first": sum(o.answer == 0 for o in outs) / n,
            "val_first_hr1": first_hr1,
        }

    return evaluate
