"""vlmr.rl: environments with their goal labellers (envs/), data collection (collect/), the PPO agent and the
VLM reward wrapper (agent/), and experiments: compare, statistics, pipeline, scaling (experiments/)."""
