"""r2rec: reasoning-enhanced LLM recommendation (R2Rec: interaction chains -> interaction-of-thought -> SFT -> GRPO)."""

__version__ = "0.1.0"
