"""Per-goal temperature and threshold fitting: pure functions on a cached similarity matrix.

    sims: float (N, C) cosine similarities, the G goals in the first G columns, negatives after
    labels: 0/1 (N, G) ground truth of every goal for every frame

    fit = fit_calibration(sims, labels, ThresholdCriterion("precision_at", target_precision=0.95), min_positives=10)
    fit.temperatures, fit.thresholds, fit.goals[g]      # per goal: tau_g, beta_g, fallback, target_met, ...

tau_g minimises the mean binary cross-entropy of P(g|o) = softmax_k(s_k / tau)[g]
against goal g's labels over every frame. scipy is not a dependency, so the 1-D
search is `minimize_bounded`: a grid scan over log tau (robust to a
non-unimodal NLL) refined by golden-section search in the best grid bracket.
beta_g is then chosen on P(g|o) at tau_g from torchmetrics' exact PR curve.

Tests: `.venv/bin/python -m pytest tests/test_calibrate_fitting.py -q`
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from vlmr.calibrate.guarantee import GuaranteedChoice, guaranteed_threshold

from vlmr.core.metrics import count_metrics
from vlmr.core.quality import QualityWarning, quality_issue

Criterion = Literal["precision_at", "max_f1", "fbeta"]
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class CalibrationWarning(QualityWarning):
    """A calibration result that is valid but weaker than asked for (fallback, unreachable target, bound hit)."""


def minimize_bounded(f: Callable[[float], float], lo: float, hi: float, xtol: float = 1e-5,
                     grid: int = 25, max_iter: int = 200) -> tuple[float, float]:
    """argmin of f on [lo, hi]: a `grid`-point scan, then golden-section search in the best point's bracket.

    Deterministic; ties go to the smallest x. Returns (x, f(x)).
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bad bounds [{lo}, {hi}]")
    xs = np.linspace(lo, hi, max(grid, 3))
    fs = [f(float(x)) for x in xs]
    i = int(np.argmin(fs))
    best_x, best_f = float(xs[i]), float(fs[i])
    a, b = float(xs[max(i - 1, 0)]), float(xs[min(i + 1, len(xs) - 1)])
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if b - a <= xtol:
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    for x, fx in ((c, fc), (d, fd)):
        if fx < best_f:
            best_x, best_f = x, fx
    return best_x, best_f


# ---------------------------------------------------------------------------- temperature


# The NLL runs in numpy float64: it is a few hundred small evaluations, and torch's thread pool
# costs 100x the arithmetic on them when the machine's cores are busy.


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.exp(x - m).sum(axis=-1, keepdims=True)) + m


def log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def log_probs_both(logits: np.ndarray, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """(log P, log(1 - P)) of softmax(logits)[:, cols], both exact even when P rounds to 1.

    Only a row's argmax can have P > 1/2, and there 1 - P is the softmax mass of the
    other candidates: a logsumexp with the argmax left out. Elsewhere log1mexp is exact.
    """
    lse = _logsumexp(logits)
    log_p = logits[:, cols] - lse
    top = logits.argmax(axis=-1)[:, None]
    others = logits.copy()
    np.put_along_axis(others, top, -np.inf, axis=-1)
    rest = _logsumexp(others) - lse
    is_top = top == np.arange(logits.shape[1])[cols][None, :]
    return log_p, np.where(is_top, rest, log1mexp(np.minimum(log_p, 0.0)))


def bce(log_p: np.ndarray, log_not_p: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy; only the side each label selects is used (no 0 * -inf)."""
    return float(-np.where(labels > 0, log_p, log_not_p).mean())


def _f64(x) -> np.ndarray:
    return x.double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def goal_nll(sims, labels, goal: int, tau: float) -> float:
    """Mean BCE of P(goal | o_n) at temperature tau against goal's labels (N,), in float64."""
    log_p, log_not_p = log_probs_both(_f64(sims) / tau, slice(goal, goal + 1))
    return bce(log_p, log_not_p, _f64(labels).reshape(-1, 1))


def pooled_nll(sims, labels, tau: float) -> float:
    """Mean BCE over every (frame, goal) pair with one shared temperature; labels (N, G)."""
    labels = _f64(labels)
    return bce(*log_probs_both(_f64(sims) / tau, slice(0, labels.shape[1])), labels)


def fit_log_temperature(nll: Callable[[float], float], tau_min: float, tau_max: float) -> tuple[float, float]:
    """Fit tau by a bounded 1-D search over log tau. Returns (tau, nll(tau))."""
    log_tau, value = minimize_bounded(lambda lt: nll(math.exp(lt)), math.log(tau_min), math.log(tau_max))
    return math.exp(log_tau), value


def as_float32(x: float) -> float:
    """The value a float32 buffer will hold: the reward model stores tau and beta as float32."""
    return float(np.float32(x))


def goal_probs(sims: torch.Tensor, temperatures: torch.Tensor, num_saved: int | None = None) -> torch.Tensor:
    """P(g | o_n) for every goal, each at its own temperature: (N, G), exactly as RewardModel.all_probs.

    num_saved: sims holds the saved candidates in its first num_saved columns and then one column per goal added
    at load (the last goals of `temperatures`), each scored against the saved candidates plus itself."""
    from vlmr.finetune.reward_math import all_goal_log_probs, new_goal_log_probs

    sims, temperatures = sims.float(), temperatures.float()
    if num_saved is None or sims.shape[1] == num_saved:
        return all_goal_log_probs(sims, temperatures).exp().clamp(0.0, 1.0)
    known = len(temperatures) - (sims.shape[1] - num_saved)
    saved = all_goal_log_probs(sims[:, :num_saved], temperatures[:known])
    new = new_goal_log_probs(sims, temperatures[known:], num_saved)
    return torch.cat([saved, new], dim=1).exp().clamp(0.0, 1.0)


# ---------------------------------------------------------------------------- threshold


@dataclasses.dataclass(frozen=True)
class ThresholdCriterion:
    name: Criterion = "precision_at"
    target_precision: float = 0.95
    beta: float = 1.0  # F-beta's beta (used by fbeta; max_f1 is beta = 1)
    confidence: float | None = None  # precision_at: the precision holds with this probability (calibrate/
    # guarantee.py); None = the point estimate (empirical precision on the fitting data)

    def describe(self) -> str:
        if self.name == "precision_at" and self.confidence is not None:
            return (f"largest recall whose precision >= {self.target_precision:g} holds with confidence "
                    f"{self.confidence:g} (Clopper-Pearson, fixed-sequence scan)")
        if self.name == "precision_at":
            return f"largest recall with precision >= {self.target_precision:g}"
        if self.name == "fbeta":
            return f"max F-beta (beta = {self.beta:g})"
        return "max F1"


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # beta: reward = 1[P >= threshold]
    precision: float  # on the data it was chosen on
    recall: float
    target_met: bool | None  # precision_at only: whether the target precision was reachable
    best_precision: float  # the highest precision any threshold reaches on this data
    guarantee: GuaranteedChoice | None = None  # precision_at with a confidence: the bound scan's outcome


def pr_curve(probs: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact PR curve (torchmetrics): precision, recall per distinct threshold (ascending), float64 arrays."""
    from torchmetrics.classification import BinaryPrecisionRecallCurve

    precision, recall, thresholds = BinaryPrecisionRecallCurve(thresholds=None)(probs.float(), labels.long())
    # the last (precision 1, recall 0) point has no threshold: drop it
    return precision[:-1].double().numpy(), recall[:-1].double().numpy(), thresholds.double().numpy()


def choose_threshold(probs: torch.Tensor, labels: torch.Tensor, criterion: ThresholdCriterion) -> ThresholdChoice:
    """Choose beta on (probs, labels) by the criterion. Needs at least one positive.

    Ties go to the highest threshold: for equal scores of the criterion, the most
    conservative reward (a false positive is a reward the agent farms).
    """
    if int(labels.sum()) == 0:
        raise ValueError("choose_threshold needs at least one positive label")
    precision, recall, thresholds = pr_curve(probs, labels)
    best_precision = float(precision.max())
    target_met = None
    if criterion.name == "precision_at":
        ok = precision >= criterion.target_precision - 1e-9
        target_met = bool(ok.any())
        if not target_met:
            # fall back to the operating points that reach the best precision there is
            ok = precision >= best_precision - 1e-12
        score = np.where(ok, recall, -1.0)
    else:
        b2 = 1.0 if criterion.name == "max_f1" else criterion.beta ** 2
        denom = b2 * precision + recall
        score = np.where(denom > 0, (1 + b2) * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    top = score.max()
    i = int(np.flatnonzero(score >= top - 1e-12)[-1])  # thresholds ascend: last index = highest threshold
    point = ThresholdChoice(float(thresholds[i]), float(precision[i]), float(recall[i]), target_met, best_precision)
    if criterion.name != "precision_at" or criterion.confidence is None:
        return point
    # with a confidence, the threshold is the bound scan's; without a guarantee, the point estimate stays
    # (marked guaranteed: false) rather than a threshold that would reward nothing
    g = guaranteed_threshold(probs.numpy(), labels.numpy(), criterion.target_precision, criterion.confidence)
    if not g.guaranteed:
        return dataclasses.replace(point, guarantee=g)
    counts = count_metrics((probs >= g.threshold).numpy(), (labels > 0).numpy())
    return ThresholdChoice(g.threshold, counts["precision"], counts["recall"], target_met, best_precision, g)


def guarantee_fields(choice: ThresholdChoice, fallback: bool = False) -> dict:
    """calibration.json's guarantee fields for a threshold; `guaranteed` is None when no confidence was asked."""
    g = choice.guarantee
    if g is None and choice.target_met is None:  # max_f1 / fbeta: no precision target to guarantee
        return {"guaranteed": None}
    if g is None:  # a point estimate: nothing is guaranteed, nothing is claimed
        return {"guaranteed": None}
    if fallback:  # the pooled bound covers all goals together, not this one
        return {"guaranteed": False, "precision_bound": None, "pooled_guaranteed": g.guaranteed}
    return {"guaranteed": g.guaranteed, "precision_bound": g.bound, "best_bound": g.best_bound,
            "more_predicted_needed": g.more_predicted_needed, "scan_stopped_at": g.stopped_at}


# ---------------------------------------------------------------------------- everything together


@dataclasses.dataclass
class CalibrationFit:
    temperatures: list[float]  # (G,) float32-representable
    thresholds: list[float]  # (G,)
    goals: list[dict]  # per goal: fallback, reason, positives, negatives, nll, at_bound, target_met, val P/R
    shared: dict  # the pooled fit every fallback goal gets
    warnings: list[str]
    threshold_frames: str = "all"  # the frames each threshold was chosen on: "all" or "own_goal"


def at_bound(tau: float, tau_min: float, tau_max: float) -> bool:
    """Whether a fitted temperature sits at a bound of its search (the likelihood wanted it further)."""
    return bool(math.isclose(tau, tau_min, rel_tol=1e-3) or math.isclose(tau, tau_max, rel_tol=1e-3))


def fit_pooled(sims, labels, criterion: ThresholdCriterion, tau_min: float = 1e-3, tau_max: float = 10.0,
               how: str = "pooled fit over all goals", own_goal=None) -> tuple[dict, ThresholdChoice]:
    """One temperature and one threshold for every (frame, goal) pair of sims (N, C) and labels (N, G).

    own_goal (N,): the threshold is chosen on the (frame, its own mission) pairs only; the temperature still
    fits every pair."""
    sims, labels = torch.as_tensor(sims).float(), torch.as_tensor(labels).long()
    sims64, labels64 = _f64(sims), _f64(labels)
    tau, nll = fit_log_temperature(lambda t: pooled_nll(sims64, labels64, t), tau_min, tau_max)
    tau = as_float32(tau)
    probs = goal_probs(sims, torch.full((labels.shape[1],), tau))
    if own_goal is None:
        probs, labels = probs.reshape(-1), labels.reshape(-1)
    else:
        rows = torch.nonzero(torch.as_tensor(own_goal) >= 0).squeeze(-1)
        cols = torch.as_tensor(own_goal)[rows].long()
        probs, labels = probs[rows, cols], labels[rows, cols]
    if int(labels.sum()) == 0:
        raise ValueError("no positive label among the frames the threshold is fitted on")
    choice = choose_threshold(probs, labels, criterion)
    return {"temperature": tau, "threshold": choice.threshold, "how": how, "nll": nll,
            "at_bound": at_bound(tau, tau_min, tau_max),
            "target_met": choice.target_met, "val_precision": choice.precision, "val_recall": choice.recall,
            **guarantee_fields(choice)}, choice


def fit_calibration(sims, labels, criterion: ThresholdCriterion, min_positives: int = 10,
                    tau_min: float = 1e-3, tau_max: float = 10.0, goal_names: list[str] | None = None,
                    strict: bool = False, own_goal=None) -> CalibrationFit:
    """Fit tau_g then beta_g for every goal; goals with too few positives (or no negatives) get the pooled fit.

    The pooled ("shared") fit is one temperature for all (frame, goal) pairs and a threshold chosen on
    all pairs at that temperature: a model-wide estimate that needs no per-goal data.

    own_goal (N,): each frame's mission (goal index, -1 for none). Given, goal g's threshold is chosen on
    the frames of g's own episodes only, the frames its reward is paid on in RL (calibrate's
    threshold_frames=own_goal), and its positives and negatives are counted there; temperatures still fit
    every frame. None: every frame scored for g.
    """
    sims = torch.as_tensor(sims).float()
    labels = torch.as_tensor(labels).long()
    n, num_goals = labels.shape
    if sims.ndim != 2 or sims.shape[0] != n or sims.shape[1] < num_goals:
        raise ValueError(f"sims {tuple(sims.shape)} does not fit labels {tuple(labels.shape)}")
    names = goal_names or [str(g) for g in range(num_goals)]
    if int(labels.sum()) == 0:
        raise ValueError("no positive labels for any goal: nothing to fit a threshold to")
    if own_goal is not None:
        own_goal = torch.as_tensor(own_goal).long().reshape(-1)
        if own_goal.shape[0] != n:
            raise ValueError(f"own_goal has {own_goal.shape[0]} frames, labels {n}")
        if not bool((own_goal >= 0).any()):
            raise ValueError("own_goal: no frame has a mission in the goal set, so no threshold can be fitted on "
                             "own-goal frames")
    where = "the fitting split" if own_goal is None else "its own episodes' frames of the fitting split"

    # the rows each goal's threshold is chosen on
    frames_of = [torch.arange(n) if own_goal is None else torch.nonzero(own_goal == g).squeeze(-1)
                 for g in range(num_goals)]
    notes: list[str] = []  # one line per goal and problem, for the file and the report
    grouped: dict[str, list[str]] = {"fallback": [], "target": [], "guarantee": [], "bound": []}  # a warning each

    def warn(kind, goal, msg, short):
        notes.append(f"goal {goal!r}: {msg}")
        grouped[kind].append(f"{goal!r} ({short})")

    sims64, labels64 = _f64(sims), _f64(labels)
    how = "pooled fit over all goals" + ("" if own_goal is None else " (threshold on own-goal frames)")
    shared, shared_choice = fit_pooled(sims, labels, criterion, tau_min, tau_max, how, own_goal)
    shared_tau = shared["temperature"]

    temps, goals = [], []
    for g in range(num_goals):
        pos = int(labels[frames_of[g], g].sum())
        neg = len(frames_of[g]) - pos
        entry = {"positives": pos, "negatives": neg}
        reason = None
        if pos < min_positives:
            reason = f"{pos} positives in {where} < min_positives {min_positives}"
        elif neg == 0:
            reason = f"no negatives in {where}"
        if reason:
            warn("fallback", names[g], f"{reason}; using the shared fallback values "
                 f"(temperature {shared_tau:.4g}, threshold {shared_choice.threshold:.4g})", reason)
            temps.append(shared_tau)
            entry.update(fallback=True, fallback_reason=reason, nll=goal_nll(sims64, labels64[:, g], g, shared_tau),
                         at_bound=False)
        else:
            tau, nll = fit_log_temperature(lambda t, g=g: goal_nll(sims64, labels64[:, g], g, t), tau_min, tau_max)
            tau = as_float32(tau)
            temps.append(tau)
            entry.update(fallback=False, fallback_reason=None, nll=nll, at_bound=at_bound(tau, tau_min, tau_max))
            if entry["at_bound"]:
                warn("bound", names[g], f"fitted temperature {tau:.4g} sits at a bound of [{tau_min:g}, {tau_max:g}]; "
                     "widen the bounds or check the labels", f"{tau:.4g}")
        goals.append(entry)

    probs = goal_probs(sims, torch.tensor(temps))
    thresholds = []
    for g, entry in enumerate(goals):
        rows = frames_of[g]
        if entry["fallback"]:
            choice = shared_choice
            # the shared threshold, measured on this goal's own fitting data (None where undefined there)
            counts = count_metrics((probs[rows, g] >= choice.threshold).numpy(), (labels[rows, g] > 0).numpy())
            # the pooled fit's target or guarantee says nothing certain about this goal
            entry.update(val_precision=counts["precision"], val_recall=counts["recall"], target_met=None,
                         **guarantee_fields(choice, fallback=True))
        else:
            choice = choose_threshold(probs[rows, g], labels[rows, g], criterion)
            entry.update(val_precision=choice.precision, val_recall=choice.recall, target_met=choice.target_met,
                         **guarantee_fields(choice))
            if entry["guaranteed"] is False:
                g_ = choice.guarantee
                need = (f"{g_.more_predicted_needed} more predicted positives at its observed precision"
                        if g_.more_predicted_needed is not None else "a better model: its observed precision is "
                        "at or below the target")
                warn("guarantee", names[g], f"no threshold's {criterion.confidence:g}-confidence lower bound on "
                     f"precision reaches {criterion.target_precision:g} (best bound {g_.best_bound:.3f}; it needs "
                     f"{need}); the point-estimate threshold {choice.threshold:.4g} is used, marked "
                     "guaranteed: false", f"best bound {g_.best_bound:.3f}")
            if choice.target_met is False:
                warn("target", names[g], f"target precision {criterion.target_precision:g} is not reachable on "
                     f"the fitting data; the best achievable is {choice.best_precision:.4f}, so the threshold "
                     f"{choice.threshold:.4g} that reaches it is used (marked target_met: false)",
                     f"best {choice.best_precision:.4f}")
        entry["best_precision"] = choice.best_precision
        thresholds.append(choice.threshold)
    if shared_choice.target_met is False and grouped["fallback"]:
        notes.append(f"the shared fallback threshold misses target precision {criterion.target_precision:g}; "
                     f"the best achievable over all goals is {shared_choice.best_precision:.4f}")
    heads = {"fallback": f"too little data to fit (fewer than min_positives {min_positives} positives, or no "
                         "negatives); they get the shared fallback values, marked fallback: true"
                         + ("" if shared_choice.target_met is not False else
                            f" (the shared threshold itself reaches precision {shared_choice.best_precision:.4f} "
                            "at best)"),
             "target": f"target precision {criterion.target_precision:g} is not reachable on the fitting data; "
                       "each uses the threshold that reaches its best achievable precision (target_met: false)",
             "guarantee": f"no threshold with a guaranteed precision of {criterion.target_precision:g} at confidence "
                          f"{criterion.confidence}; each uses the point estimate, marked guaranteed: false",
             "bound": f"fitted temperature at a bound of [{tau_min:g}, {tau_max:g}]"}
    for kind, items in grouped.items():
        if items:
            shown = ", ".join(items[:8]) + (f", and {len(items) - 8} more" if len(items) > 8 else "")
            quality_issue(f"{len(items)} goal(s): {heads[kind]}: {shown}", strict, CalibrationWarning)
    return CalibrationFit(temps, thresholds, goals, shared, notes, "all" if own_goal is None else "own_goal")
