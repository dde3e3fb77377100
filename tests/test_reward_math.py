"""The reward maths against values computed by hand."""

import math

import torch
from vlmr.finetune.reward_math import (
    all_goal_log_probs,
    binary_reward,
    ensemble_text_embeddings,
    goal_baseline_reward,
    goal_log_probs,
)


def test_goal_prob_is_softmax_over_candidates_at_goal_temperature():
    sims = torch.tensor([[0.3, 0.1, 0.2]])  # goal 0, goal 1, one negative
    p = goal_log_probs(sims, torch.tensor([0]), torch.tensor([0.1])).exp()
    expected = math.exp(3) / (math.exp(3) + math.exp(1) + math.exp(2))
    assert abs(p.item() - expected) < 1e-6


def test_each_goal_uses_its_own_temperature():
    sims = torch.tensor([[0.3, 0.1, 0.2]])
    taus = torch.tensor([0.1, 0.05])
    p = all_goal_log_probs(sims, taus).exp()[0]
    assert abs(p[0].item() - math.exp(3) / (math.exp(3) + math.exp(1) + math.exp(2))) < 1e-6
    assert abs(p[1].item() - math.exp(2) / (math.exp(6) + math.exp(2) + math.exp(4))) < 1e-6
    # all_goal_log_probs agrees with the per-row form
    for g in range(2):
        row = goal_log_probs(sims, torch.tensor([g]), taus[g:g + 1]).exp()
        assert torch.allclose(row, p[g:g + 1])


def test_lower_temperature_sharpens():
    sims = torch.tensor([[0.3, 0.1, 0.2]])
    hot = goal_log_probs(sims, torch.tensor([0]), torch.tensor([1.0])).exp()
    cold = goal_log_probs(sims, torch.tensor([0]), torch.tensor([0.01])).exp()
    assert cold > hot and cold > 0.99


def test_binary_reward_threshold_is_inclusive():
    p = torch.tensor([0.2, 0.5, 0.8])
    assert binary_reward(p, torch.tensor([0.5, 0.5, 0.5])).tolist() == [0.0, 1.0, 1.0]
    assert binary_reward(p, torch.tensor([0.1, 0.6, 0.9])).tolist() == [1.0, 0.0, 0.0]


def test_prompt_ensemble_is_normalised_mean_of_normalised_embeddings():
    per_template = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # one caption, two templates
    out = ensemble_text_embeddings(per_template)
    s = 1 / math.sqrt(2)
    assert torch.allclose(out, torch.tensor([[s, s]]), atol=1e-6)


def test_goal_baseline_reward_by_hand():
    x = torch.tensor([[0.0, 1.0]])
    g = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([-1.0, 0.0])
    # alpha = 0: 1 - 0.5 * |x - g|^2 = x . g for unit vectors = 0
    assert abs(goal_baseline_reward(x, g, b, 0.0).item() - 0.0) < 1e-6
    # alpha = 1: only the component of (x - g) along g - b = (1, 0) counts: (-1, 0) -> 1 - 0.5 * 1
    assert abs(goal_baseline_reward(x, g, b, 1.0).item() - 0.5) < 1e-6
    # alpha = 0.5: (0.5 * (-1, 0) + 0.5 * (-1, 1)) = (-1, 0.5) -> 1 - 0.5 * 1.25
    assert abs(goal_baseline_reward(x, g, b, 0.5).item() - (1 - 0.625)) < 1e-6
