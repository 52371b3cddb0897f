"""Prompts: what SFT, GRPO, evaluation and serving all read, so that every stage renders the same text.

- :mod:`r2rec.prompting.builder`: :class:`PromptConfig` (YAML section ``prompt``), :class:`PromptBuilder`
  (history, candidates in prompt order, context chains as citations) and :func:`prompt_config` /
  :func:`rebuild_messages` (a run's prompt settings: the ones its traces were built with, plus overrides);
- :mod:`r2rec.prompting.messages`: the chat messages from the text templates in ``templates/*.txt``;
- :mod:`r2rec.prompting.prior`: a run's precomputed prior scores (``candidate_order: prior``, and the fusion of
  LLM and prior scores), written by the baselines stage.

It sits on the data, the prior scores (:mod:`r2rec.signals`), the graph (context chains) and the citation
grammar (:mod:`r2rec.grammar`), and below the model code: a prompt is plain text, built without torch.
"""

from r2rec.prompting.builder import (
    Prompt,
    PromptBuilder,
    PromptConfig,
    noun_for_dataset,
    prompt_config,
    prompt_inputs,
    rebuild_messages,
)
from r2rec.prompting.messages import build_messages
from r2rec.prompting.prior import PriorScores

__all__ = [
    "Prompt",
    "PromptBuilder",
    "PromptConfig",
    "PriorScores",
    "build_messages",
    "noun_for_dataset",
    "prompt_config",
    "prompt_inputs",
    "rebuild_messages",
]
