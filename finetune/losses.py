"""Training losses: pure functions on similarities, wrapped in `nn.Module`s that hold the learned scales.

    pos = positives_mask(captions, labels)                  # (B, B) bool: same caption or a shared positive goal
    loss = multi_positive_clip_loss(scale * img @ txt.T, pos)
    loss = goal_classification_loss(img @ cand.T, tau, labels)   # BCE of P(g|o) against the goal labels
    loss = sigmoid_loss(scale * img @ txt.T + bias, pos)    # SigLIP-style, as an option

Many frames share a caption ("a red circle" fits hundreds of frames), so the
contrastive loss uses soft targets spread evenly over every positive instead of
the diagonal alone: a pair that shares a caption or a positive goal is never
pushed apart. The goal loss trains the exact quantity the reward uses,
`P(g|o) = softmax over candidates (goals + negatives)` (vlmr.finetune.reward_math).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from vlmr.finetune.reward_math import all_goal_log_probs

MIN_TEMPERATURE = 0.01  # CLIP caps its logit scale at 100; sharper softmaxes only make training unstable


def positives_mask(captions: list[str], labels: torch.Tensor | None = None) -> torch.Tensor:
    """(B, B) bool: pair (i, j) is positive when both frames have the same caption or share a positive goal."""
    ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    cap = torch.tensor([ids[c] for c in captions], device=labels.device if labels is not None else None)
    mask = cap.unsqueeze(0) == cap.unsqueeze(1)
    if labels is not None and labels.numel():
        pos = (labels > 0.5).float()
        mask = mask | ((pos @ pos.T) > 0)
    return mask


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits_i)_j; targets rows sum to 1."""
    return -(targets * logits.log_softmax(dim=-1)).sum(-1).mean()


def multi_positive_clip_loss(logits: torch.Tensor, pos_mask: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss with soft targets: each row's (and column's) positives share probability mass equally.

    logits: (B, B) scaled image-to-text similarities, logits[i, j] = scale * x_i . t_j (text j is frame j's
    caption). With a diagonal-only mask this is exactly CLIP's InfoNCE loss.
    """
    pos = pos_mask.to(logits.dtype)
    image_to_text = soft_cross_entropy(logits, pos / pos.sum(1, keepdim=True))
    text_to_image = soft_cross_entropy(logits.T, pos.T / pos.T.sum(1, keepdim=True))
    return 0.5 * (image_to_text + text_to_image)


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p <= 0, stable at both ends (Maechler 2012)."""
    log_p = log_p.clamp(max=-1e-6)
    near_one = log_p > -math.log(2)
    # each branch gets a safe dummy input where it is not used, so neither can put a NaN in the gradient
    a = torch.where(near_one, log_p, torch.full_like(log_p, -1.0))
    b = torch.where(near_one, torch.full_like(log_p, -1.0), log_p)
    return torch.where(near_one, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(b)))


def goal_classification_loss(sims: torch.Tensor, tau: torch.Tensor, labels: torch.Tensor,
                             pos_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of P(g|o) against the ground-truth labels, averaged over frames and goals.

    sims: (B, C) cosine similarities to every candidate, goals in the first G columns; tau: (G,) or scalar
    temperature; labels: (B, G) in {0, 1}. P(g|o) is the reward's own softmax over the candidates.
    """
    num_goals = labels.shape[1]
    tau = tau.expand(num_goals) if tau.dim() == 0 else tau
    log_p = all_goal_log_probs(sims.float(), tau.float())
    labels = labels.float()
    nll = -(pos_weight * labels * log_p + (1.0 - labels) * log1mexp(log_p))
    return nll.mean()


def sigmoid_loss(logits: torch.Tensor, pos_mask: torch.Tensor) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): independent binary terms per pair, -log sigmoid(z_ij * logit_ij), / B."""
    z = pos_mask.to(logits.dtype) * 2.0 - 1.0
    return -F.logsigmoid(z * logits).sum() / logits.shape[0]


class MultiPositiveClipLoss(nn.Module):
    """CLIP contrastive loss; the scale is the CLIP model's own `logit_scale`, passed in by the caller."""

    def forward(self, image_emb, text_emb, logit_scale, pos_mask):
        logits = logit_scale.exp().clamp(max=1.0 / MIN_TEMPERATURE) * image_emb @ text_emb.T
        return multi_positive_clip_loss(logits.float(), pos_mask)


class GoalClassificationLoss(nn.Module):
    """BCE of P(g|o) with one temperature shared by all goals (calibration later fits one per goal).

    The temperature is a parameter `log_tau`, learned when `learn_temperature` is set, else a fixed buffer.
    """

    def __init__(self, init_temperature: float, learn_temperature: bool = True, pos_weight: float = 1.0):
        super().__init__()
        value = torch.tensor(math.log(max(init_temperature, MIN_TEMPERATURE)))
        if learn_temperature:
            self.log_tau = nn.Parameter(value)
        else:
            self.register_buffer("log_tau", value)
        self.pos_weight = pos_weight

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_tau.exp().clamp(min=MIN_TEMPERATURE)

    def forward(self, image_emb, candidate_emb, labels):
        sims = image_emb.float() @ candidate_emb.float().T
        return goal_classification_loss(sims, self.temperature, labels, self.pos_weight)


class SigmoidLoss(nn.Module):
    """SigLIP loss with its own learned scale and bias (initialised as in the paper: scale 10, bias -10)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, image_emb, text_emb, pos_mask):
        logits = self.log_scale.exp() * (image_emb.float() @ text_emb.float().T) + self.bias
        return sigmoid_loss(logits, pos_mask)
