"""Shared fixtures for the foundation tests: a tiny CLIP and a tiny reward model (random init, seeded)."""

import pytest
import torch
from vlmr.finetune.models import create_clip
from vlmr.finetune.reward_model import RewardModel

GOALS = ["go to the red ball", "go to the blue key", "open the green door"]


@pytest.fixture(scope="session")
def tiny_clip():
    torch.manual_seed(0)
    return create_clip("vlmr-tiny")


@pytest.fixture(scope="session")
def tiny_reward_model():
    torch.manual_seed(0)
    return RewardModel.create("vlmr-tiny", GOALS, negatives=["an empty room"],
                              templates=["{goal}", "a view where you {goal}"])
