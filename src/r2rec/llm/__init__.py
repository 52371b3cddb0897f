"""LLM side: model registry and batched generation with answers constrained to the candidate titles.

Prompts are built one layer down (:mod:`r2rec.prompting`); the completion format is :mod:`r2rec.grammar`.
"""
