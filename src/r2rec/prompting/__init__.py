"""Prompts: what SFT, GRPO, evaluation and serving all read, so that every stage renders the same text.

- :mod:`r2rec.prompting.builder`: :class:`PromptConfig` (YAML section ``prompt``), :class:`PromptBuilder`
  (history, candidates in prompt order, context chains as citations) and :func:`prompt_config` /
  :func:`rebuild_messages` (a run's prompt settings: the ones its traces were built with, plus overrides);
- :mod:`r2rec.prompting.messages`: the chat messages from the text templates in ``templates/*.txt``.

It sits on the data, the prior scores (:mod:`r2rec.signals`), the graph (context chains) and the citation
grammar (:mod:`r2rec.grammar`), and below the model code: a prompt is plain text, built without torch.
"""

from r2rec.prompting.builder import (
    Prompt,
    PromptBuilder,
    PromptConfig,
    noun_for_dataset,
    prompt_config,
    rebuild_messages,
)
from r2rec.prompting.messages import build_messages

__all__ = [
    "Prompt",
    "PromptBuilder",
    "PromptConfig",
    "build_messages",
    "noun_for_dataset",
    "prompt_config",
    "rebuild_messages",
]
