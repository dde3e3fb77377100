"""Validation scores of P(g|o): per-goal AUROC/AP, their means, own-goal AUROC, retrieval top-1.

    scores = GoalScores()                      # a torchmetrics Metric: gathers every DDP rank's predictions
    scores.update(probs, labels, own_goal)     # probs (B, G) = P(g|o), labels (B, G) 0/1, own_goal (B,) or -1
    scores.compute()                           # goal_metrics(...) over the whole val set
    sample_rows(frames, probs, labels, goals)  # rows of the W&B table of a few val frames and their top goals

AUROC and AP come from vlmr.core.metrics.ranking_metrics, the project's one way to compute them;
undefined values (a goal without positives, no missions for own-goal AUROC) are None there and here.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from vlmr.core.metrics import ranking_metrics

SUMMARY_KEYS = ("auroc_mean", "ap_mean", "retrieval_top1", "own_goal_auroc")  # the headline val/ numbers


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def goal_metrics(probs: torch.Tensor, labels: torch.Tensor, own: torch.Tensor) -> dict:
    """Per-goal AUROC and AP of P(g|o) ({goal index: value}, defined goals only), their means over the goals
    where they are defined, own-goal AUROC (each frame scored for its episode's mission) and retrieval top-1
    (the most probable goal is true, over frames with any true goal). Undefined -> None."""
    labels = (labels > 0.5).long()
    per_goal = [ranking_metrics(probs[:, g], labels[:, g]) for g in range(labels.shape[1])]
    out: dict = {kind: {g: m[kind] for g, m in enumerate(per_goal) if m[kind] is not None} for kind in ("auroc", "ap")}
    out["auroc_mean"], out["ap_mean"] = _mean(list(out["auroc"].values())), _mean(list(out["ap"].values()))
    has_pos = labels.sum(1) > 0
    hit = labels.gather(1, probs.argmax(1, keepdim=True))[:, 0]
    out["retrieval_top1"] = float(hit[has_pos].float().mean()) if has_pos.any() else None
    mine = own >= 0
    idx = own[mine][:, None]
    out["own_goal_auroc"] = ranking_metrics(probs[mine].gather(1, idx)[:, 0], labels[mine].gather(1, idx)[:, 0])["auroc"]
    return out


class GoalScores(Metric):
    """Collects P(g|o), labels and own-goal ids over the val set (synced across DDP ranks) and scores them."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("own", default=[], dist_reduce_fx="cat")

    def update(self, probs, labels, own):
        self.probs.append(probs.float())
        self.labels.append(labels.float())
        self.own.append(own.long())

    def compute(self) -> dict:
        if isinstance(self.probs, list) and not self.probs:
            return {}  # no val batches on this process
        return goal_metrics(*(torch.cat(s) if isinstance(s, list) else s for s in (self.probs, self.labels, self.own)))


def sample_rows(frames, probs: torch.Tensor, labels: torch.Tensor, goals: list[str]) -> list[list]:
    """[frame (H, W, 3) uint8, "top goals (P)", "true goals"] per sample, for a W&B table."""
    rows = []
    for frame, p, y in zip(frames, probs, labels):
        top = p.topk(min(3, len(goals)))
        top_goals = "; ".join(f"{goals[i]} ({v:.2f})" for v, i in zip(top.values.tolist(), top.indices.tolist()))
        rows.append([torch.as_tensor(frame).cpu().numpy(), top_goals, "; ".join(g for g, t in zip(goals, y) if t > 0.5)])
    return rows
