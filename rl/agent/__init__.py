"""The agent: CleanRL-style PPO, its policy network, vector envs and the batched VLM reward wrapper."""
