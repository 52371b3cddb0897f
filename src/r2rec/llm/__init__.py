"""LLM side: model registry, prompts, completion format, generation with constrained answers."""
