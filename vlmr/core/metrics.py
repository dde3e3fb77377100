"""Reward-quality metrics, computed one way for the whole project (torchmetrics where it has them).

    binary_metrics(probs, labels, preds)      # precision, recall, F1, AUROC, AP, ECE + counts + notes
    ranking_metrics(probs, labels)            # AUROC and AP only (no decisions), e.g. a validation step
    count_metrics(pred, truth)                # counts + precision/recall of 0/1 decisions (rollout monitor)
    pooled_count_metrics([counts, ...])       # the same from summed counts of several batches
    macro_average([metrics, ...])             # mean over goals, skipping undefined values

The convention, everywhere: a metric whose denominator is empty is undefined, never 0 or 1.
- precision with no predicted positives (tp + fp = 0): undefined;
- recall, F1 and AP with no positives: undefined; AUROC without both classes: undefined;
- undefined is None in dicts (null in JSON, "n/a" in reports), with a note saying why;
- means over goals or seeds skip undefined values and say how many terms they have.
A reward that pays nothing has no precision to report: calling it 0 would punish caution, and calling
it 1 would hide that the reward never fires; the counts (tp, fp, ...) beside it show which case it is.
"""

from __future__ import annotations

import math

import numpy as np
import torch

METRICS = ("precision", "recall", "f1", "auroc", "ap", "ece")


def _r(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def count_metrics(pred, truth) -> dict:
    """tp/fp/fn/tn and precision/recall of binary decisions against ground truth (None when undefined)."""
    pred = np.asarray(pred, dtype=bool).reshape(-1)
    truth = np.asarray(truth, dtype=bool).reshape(-1)
    counts = {"tp": int(np.sum(pred & truth)), "fp": int(np.sum(pred & ~truth)),
              "fn": int(np.sum(~pred & truth)), "tn": int(np.sum(~pred & ~truth))}
    return _with_rates(counts)


def pooled_count_metrics(counts: list[dict]) -> dict:
    """Precision/recall from summed counts of several batches (not the mean of batch precisions)."""
    return _with_rates({k: sum(c[k] for c in counts) for k in ("tp", "fp", "fn", "tn")})


def _with_rates(c: dict) -> dict:
    return {**c, "precision": _ratio(c["tp"], c["tp"] + c["fp"]), "recall": _ratio(c["tp"], c["tp"] + c["fn"])}


def ranking_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """AUROC and AP of scores against 0/1 labels; None where undefined (see the module's convention)."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    probs, labels = probs.float().reshape(-1), labels.long().reshape(-1)
    pos = int(labels.sum())
    neg = int(labels.numel() - pos)
    return {"auroc": _r(binary_auroc(probs, labels, thresholds=None)) if pos and neg else None,
            "ap": _r(binary_average_precision(probs, labels, thresholds=None)) if pos else None}


def binary_metrics(probs: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, n_bins: int = 15) -> dict:
    """Metrics of one set of decisions: probs (M,) in [0, 1], labels (M,) 0/1, preds (M,) the binary rewards."""
    from torchmetrics.functional.classification import binary_calibration_error

    # contiguous: a goal's column of a (N, G) matrix is strided, and torchmetrics' bucketize warns on that
    probs, labels, preds = probs.float().contiguous().reshape(-1), labels.long().reshape(-1), preds.bool().reshape(-1)
    if probs.numel() == 0:
        return {"positives": 0, "negatives": 0, "notes": ["no samples"], **dict.fromkeys(METRICS)}
    counts = count_metrics(preds.numpy(), labels.numpy().astype(bool))
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    pos, neg = tp + fn, counts["fp"] + counts["tn"]
    notes = []
    if tp + fp == 0:
        notes.append("no predicted positives: precision is undefined")
    if not pos:
        notes.append("no positives: recall, F1, AP and AUROC are undefined")
    elif not neg:
        notes.append("no negatives: AUROC is undefined")
    precision, recall = counts["precision"], counts["recall"]
    f1 = _ratio(2 * tp, 2 * tp + fp + fn) if pos else None
    return {"positives": pos, "negatives": neg, **{k: counts[k] for k in ("tp", "fp", "tn", "fn")},
            "precision": _r(precision), "recall": _r(recall), "f1": _r(f1), **ranking_metrics(probs, labels),
            "ece": _r(binary_calibration_error(probs, labels, n_bins=n_bins, norm="l1")), "notes": notes}


def macro_average(entries: list[dict | None], keys: tuple[str, ...] = METRICS) -> dict:
    """Mean over goals of each metric, skipping goals where it is undefined; `goals` counts each metric's terms."""
    out: dict = {}
    counts = {}
    for key in keys:
        values = [e[key] for e in entries if e is not None and e.get(key) is not None]
        out[key] = _r(np.mean(values)) if values else None
        counts[key] = len(values)
    out["goals"] = counts
    return out
