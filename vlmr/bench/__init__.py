"""Throughput and cost benchmarks (`vlmr bench`): reward inference, LoRA training, PPO on VLM rewards."""
