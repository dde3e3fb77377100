"""The reward maths as pure functions on embeddings and similarities.

Notation (docs/DESIGN.md): x = normalised image embedding, t_k = normalised text
embedding of candidate k, s_k = x . t_k. For goal g with temperature tau_g,

    P(g | o) = softmax_k(s_k / tau_g)[g]      over all candidates (goals + negatives)
    binary reward = 1[P(g | o) >= beta_g]

A goal added at load (outside the saved goal set) competes with the saved candidates and itself only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def ensemble_text_embeddings(per_template: torch.Tensor) -> torch.Tensor:
    """Prompt ensembling: (K, T, D) embeddings of K captions under T templates -> (K, D)."""
    return normalize(normalize(per_template).mean(dim=1))


def goal_log_probs(sims: torch.Tensor, goal_idx: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """log P(goal_idx[n] | o_n) for each row. sims: (N, C); goal_idx: (N,) long; tau: (N,) per-row temperature."""
    logits = sims / tau.unsqueeze(-1)
    return logits.log_softmax(dim=-1).gather(-1, goal_idx.unsqueeze(-1)).squeeze(-1)


def all_goal_log_probs(sims: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """log P(g | o_n) for every goal g: sims (N, C) with goals in the first G columns, tau (G,). Returns (N, G)."""
    num_goals = tau.shape[0]
    logits = sims.unsqueeze(1) / tau.view(1, -1, 1)  # (N, G, C): goal g's softmax uses its own tau
    idx = torch.arange(num_goals, device=sims.device)
    return logits.log_softmax(dim=-1)[:, idx, idx]


def new_goal_log_probs(sims: torch.Tensor, tau: torch.Tensor, num_saved: int) -> torch.Tensor:
    """log P(g | o_n) for goals added after the fact: sims (N, S + K) holds the S saved candidates, then the K new
    goals; tau (K,). Each new goal's softmax is over the saved candidates plus itself, so new goals never compete
    with each other and the saved goals' softmax stays as it was. Returns (N, K)."""
    num_new = sims.shape[1] - num_saved
    saved = sims[:, None, :num_saved].expand(-1, num_new, -1)
    logits = torch.cat([saved, sims[:, num_saved:, None]], dim=-1) / tau.view(1, -1, 1)  # (N, K, S + 1)
    return logits.log_softmax(dim=-1)[..., -1]


def mixed_goal_log_probs(sims: torch.Tensor, goal_idx: torch.Tensor, tau: torch.Tensor, num_goals: int,
                         num_saved: int) -> torch.Tensor:
    """goal_log_probs where ids >= num_goals name new goals (columns num_saved + id - num_goals of sims).

    A saved goal's row is computed exactly as goal_log_probs computes it over the saved columns, so adding new
    goals leaves the saved goals' probabilities (and the calibration fitted on them) unchanged."""
    if sims.shape[1] == num_saved:
        return goal_log_probs(sims, goal_idx, tau)
    out = torch.empty(goal_idx.shape, dtype=sims.dtype, device=sims.device)
    known = goal_idx < num_goals
    if bool(known.any()):
        out[known] = goal_log_probs(sims[known, :num_saved], goal_idx[known], tau[known])
    new = ~known
    if bool(new.any()):
        rows = sims[new]
        own = rows.gather(-1, (goal_idx[new] - num_goals + num_saved).unsqueeze(-1))
        logits = torch.cat([rows[:, :num_saved], own], dim=-1) / tau[new].unsqueeze(-1)
        out[new] = logits.log_softmax(dim=-1)[:, -1]
    return out


def binary_reward(probs: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The paper's reward: 1[P >= beta]."""
    return (probs >= threshold).to(probs.dtype)


def goal_baseline_reward(image_emb: torch.Tensor, goal_emb: torch.Tensor, baseline_emb: torch.Tensor,
                         alpha: float) -> torch.Tensor:
    """vlmrm's goal-baseline regularised reward (Rocamonde et al. 2023).

    r = 1 - 0.5 * || (alpha * P + (1 - alpha) * I) (x - g) ||^2, with P the projection onto the
    line from baseline b to goal g. alpha = 0 is plain cosine similarity (up to an affine map);
    alpha = 1 keeps only the goal-baseline direction. image_emb, goal_emb: (N, D); baseline_emb: (D,).
    """
    direction = normalize(goal_emb - baseline_emb)  # (N, D)
    diff = image_emb - goal_emb
    along = (diff * direction).sum(-1, keepdim=True) * direction
    projected = alpha * along + (1.0 - alpha) * diff
    return 1.0 - 0.5 * projected.pow(2).sum(-1)
