"""vlmr.finetune: the reward model (open_clip + peft LoRA), the data module, the Lightning module and losses."""
