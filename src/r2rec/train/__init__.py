"""LLM training: SFT (LoRA, TRL SFTTrainer), GRPO (TRL GRPOTrainer) and the reward registry."""
