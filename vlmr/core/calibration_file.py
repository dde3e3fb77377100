"""Reading and writing `calibration.json` (format in docs/DESIGN.md).

The file holds, per goal, the fitted temperature and threshold, the criterion
that chose the threshold, whether the goal fell back to shared values, and the
held-out metrics; plus the identity hash of the reward model it was fitted for.
`calibrate/` writes it; the reward model reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, read_json

# 2: undefined metrics are null with a note (version 1 wrote precision 0.0 where nothing was predicted)
CALIBRATION_VERSION = 2


def reward_parameter_problem(key: str, value) -> str | None:
    """What is wrong with a goal's `temperature` or `threshold` value, or None when it is usable.

    Out-of-range values do not fail later, they silently change the reward: a NaN threshold never fires, a
    negative one always fires, a NaN temperature gives P = NaN and an infinite one a uniform P. (Python's json
    reads NaN and Infinity, so a hand-edited file can hold them.)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} {value!r} is not a number"
    if key == "temperature" and not (math.isfinite(value) and value > 0):
        return f"temperature {value!r} must be finite and > 0"
    if key == "threshold" and not 0.0 <= value <= 1.0:  # NaN fails this too
        return f"threshold {value!r} must be in [0, 1]"
    return None


def write_calibration(path: str | Path, model_id: str, goals: dict[str, dict], **extra) -> Path:
    for goal, entry in goals.items():
        for key in ("temperature", "threshold"):
            if key not in entry:
                raise ValueError(f"calibration entry for goal {goal!r} lacks {key!r}")
    return atomic_write_json(path, {"version": CALIBRATION_VERSION, "model_id": model_id, "goals": goals, **extra})


def read_calibration(path: str | Path, model_id: str | None = None, goals: list[str] | None = None) -> dict:
    """Load a calibration file, checking its version, that it was fitted for `model_id`, and that it covers `goals`."""
    data = read_json(path, "calibration file")
    if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION:
        found = data.get("version") if isinstance(data, dict) else None
        raise VlmrError(f"calibration file {path} has version {found!r}; this vlmr reads version "
                        f"{CALIBRATION_VERSION}. Regenerate it with `vlmr calibrate CONFIG`.")
    if model_id is not None and data.get("model_id") != model_id:
        raise VlmrError(f"calibration file {path} was fitted for reward model {str(data.get('model_id'))[:12]}, "
                        f"not for this one ({model_id[:12]}). Run `vlmr calibrate` for this model.")
    entries = data.get("goals")
    if not isinstance(entries, dict):
        raise VlmrError(f"calibration file {path} has no 'goals' mapping")
    if goals is not None:
        missing = [g for g in goals if g not in entries]
        if missing:
            raise VlmrError(f"calibration file {path} lacks goals {missing[:5]}; refit it with `vlmr calibrate`.")
    for goal, entry in entries.items():
        for key in ("temperature", "threshold"):
            if not isinstance(entry, dict) or key not in entry:
                raise VlmrError(f"calibration file {path}: goal {goal!r} has no {key!r}; refit it with `vlmr calibrate`")
            problem = reward_parameter_problem(key, entry[key])
            if problem:
                raise VlmrError(f"calibration file {path}: goal {goal!r}: {problem}; restore the file or refit it "
                                "with `vlmr calibrate`")
    return data
