"""Experiments on rewards: the A/B compare, its statistics, the whole pipeline and the scaling study."""
