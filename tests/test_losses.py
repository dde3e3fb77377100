"""The training losses against values computed by hand.

    .venv/bin/python -m pytest tests/test_losses.py -q
"""

import math

import pytest
import torch
import torch.nn.functional as F
from vlmr.finetune.losses import (
    GoalClassificationLoss,
    MultiPositiveClipLoss,
    goal_classification_loss,
    log1mexp,
    multi_positive_clip_loss,
    positives_mask,
    sigmoid_loss,
)


def test_positives_mask_joins_same_caption_and_shared_goal():
    captions = ["a red circle", "a blue box", "a red circle", "a green key"]
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1.0]])  # frames 1 and 3 share goal 1
    mask = positives_mask(captions, labels)
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    # without labels only captions count
    assert torch.equal(positives_mask(captions), torch.tensor(
        [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool))


def test_multi_positive_loss_matches_hand_computation():
    logits = [[2.0, 1.0, 0.0], [0.5, 1.5, -1.0], [1.0, 0.0, 3.0]]
    mask = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]  # frames 0 and 1 share a caption

    def row_loss(row, pos):
        lse = math.log(sum(math.exp(v) for v in row))
        return -sum((p / sum(pos)) * (v - lse) for v, p in zip(row, pos))

    cols = [list(c) for c in zip(*logits)]
    mask_t = [list(c) for c in zip(*mask)]
    i2t = sum(row_loss(r, m) for r, m in zip(logits, mask)) / 3
    t2i = sum(row_loss(c, m) for c, m in zip(cols, mask_t)) / 3
    got = multi_positive_clip_loss(torch.tensor(logits), torch.tensor(mask, dtype=torch.bool))
    assert got.item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-6)


def test_diagonal_mask_is_plain_clip_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 5, generator=g)
    eye = torch.eye(5, dtype=torch.bool)
    target = torch.arange(5)
    clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert multi_positive_clip_loss(logits, eye).item() == pytest.approx(clip.item(), rel=1e-6)


def test_same_caption_pairs_are_not_pushed_apart():
    """Raising the score of frame 1 with frame 0's identical caption lowers the multi-positive loss (CLIP's raises it)."""
    logits = torch.zeros(3, 3, requires_grad=True)
    multi_positive_clip_loss(logits, positives_mask(["a red circle", "a red circle", "a key"])).backward()
    assert logits.grad[1, 0] < 0 and logits.grad[0, 1] < 0 and logits.grad[2, 0] > 0
    hard = torch.zeros(3, 3, requires_grad=True)
    (F.cross_entropy(hard, torch.arange(3)) + F.cross_entropy(hard.T, torch.arange(3))).backward()
    assert hard.grad[1, 0] > 0
    # the module uses the CLIP model's logit scale on cosine similarities
    img = F.normalize(torch.randn(3, 8), dim=-1)
    got = MultiPositiveClipLoss()(img, img, torch.tensor(math.log(10.0)), torch.eye(3, dtype=torch.bool))
    assert got.item() == pytest.approx(multi_positive_clip_loss(10 * img @ img.T, torch.eye(3, dtype=torch.bool)).item())


def test_goal_loss_is_bce_of_the_reward_probability():
    sims = torch.tensor([[0.3, 0.1, -0.2, 0.05], [0.0, 0.4, 0.1, 0.2]])  # 3 goals + 1 negative
    tau = torch.tensor(0.1)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    positive, negative = 0.0, 0.0  # the BCE's positive-label and negative-label terms, summed
    for n in range(2):
        z = [math.exp(s / 0.1) for s in sims[n].tolist()]
        for g in range(3):
            p = z[g] / sum(z)
            y = labels[n, g].item()
            positive += -y * math.log(p)
            negative += -(1 - y) * math.log(1 - p)
    got = goal_classification_loss(sims, tau, labels)
    assert got.item() == pytest.approx((positive + negative) / 6, rel=1e-5)
    # pos_weight scales only the positive terms
    heavier = goal_classification_loss(sims, tau, labels, pos_weight=3.0)
    assert heavier.item() == pytest.approx((3.0 * positive + negative) / 6, rel=1e-5)


def test_log1mexp_is_stable_and_has_finite_gradients():
    x = torch.tensor([-1e-9, -1e-4, -0.5, -0.7, -5.0, -80.0], dtype=torch.float32, requires_grad=True)
    y = log1mexp(x)
    ref = torch.log1p(-torch.exp(x.double().clamp(max=-1e-6)))
    assert torch.allclose(y.double(), ref, rtol=1e-4)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_goal_loss_temperature_learned_or_fixed():
    learned = GoalClassificationLoss(0.05, learn_temperature=True)
    fixed = GoalClassificationLoss(0.05, learn_temperature=False)
    assert [n for n, _ in learned.named_parameters()] == ["log_tau"]
    assert list(fixed.parameters()) == [] and "log_tau" in dict(fixed.named_buffers())
    assert learned.temperature.item() == pytest.approx(0.05)
    assert GoalClassificationLoss(1e-5).temperature.item() == pytest.approx(0.01)  # CLIP's cap


def test_sigmoid_loss_matches_hand_computation():
    logits = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    mask = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    z = [[1, -1], [1, 1]]
    expected = sum(math.log1p(math.exp(-z[i][j] * logits[i, j].item())) for i in range(2) for j in range(2)) / 2
    assert sigmoid_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)
