"""Interaction-of-thought traces: progressive masked prompting, teachers, the faithfulness filter, the stage.

It sits above the prompts and the model code: a trace is stored with the prompt the
:class:`r2rec.prompting.PromptBuilder` renders (the one SFT and evaluation render too), and the ``hf:`` teacher
runs the generation engine of :mod:`r2rec.llm`. The citation form it writes and checks is
:mod:`r2rec.grammar`, one level down so that the prompts and the model code share it without importing this
package.

Kept light on import (no torch): the ``hf:`` teacher imports its model code only when it is built.
"""
