"""The agents a rollout recording replays: a compare arm's finished runs, and the reward they trained on.

    agents = find_agents("runs/demo/compare", "adapted")              # {seed: runs/adapted/seed-S/agent.pt}
    trained_on = arm_reward({s: load_agent(p)[1] for s, p in agents.items()}, "adapted")
    check_trained_reward(trained_on, "adapted")                        # its model and calibration unchanged

Tests: `.venv/bin/python -m pytest tests/test_rollouts.py -q`
"""

from __future__ import annotations

from pathlib import Path

from vlmr.core.errors import VlmrError
from vlmr.core.files import sha256_file


def find_agents(compare_dir: str | Path, arm: str) -> dict[int, Path]:
    """{seed: agent.pt} of the arm's finished runs; one-line errors for a folder, arm or run that cannot serve."""
    runs = Path(compare_dir) / "runs"
    if not runs.is_dir():
        raise VlmrError(f"{compare_dir} is not a compare run folder (no runs/ in it); run `vlmr compare CONFIG` first")
    arms = sorted(d.name for d in runs.iterdir() if d.is_dir())
    if arm not in arms:
        raise VlmrError(f"arm {arm!r} is not in compare run {compare_dir}; its arms are {arms}")
    finished = sorted((d for d in (runs / arm).glob("seed-*") if (d / "result.json").is_file()),
                      key=lambda d: int(d.name.removeprefix("seed-")))
    if not finished:
        raise VlmrError(f"arm {arm!r} of {compare_dir} has no finished runs; run `vlmr compare CONFIG` first")
    missing = [d.name for d in finished if not (d / "agent.pt").is_file()]
    if missing:
        raise VlmrError(f"compare run {compare_dir}: arm {arm!r} has no recorded agents ({', '.join(missing)} have no "
                        "agent.pt: made by an older vlmr); rerun `vlmr compare CONFIG --force` to train and save them")
    return {int(d.name.removeprefix("seed-")): d / "agent.pt" for d in finished}


def arm_reward(records: dict[int, dict], arm: str) -> dict:
    """The reward model and calibration the arm's agents trained on (the same for every seed, or an error)."""
    keys = ("reward_model", "reward_model_id", "calibration", "calibration_sha256", "env_id", "env_kwargs",
            "image_size", "terminate_on_reward")
    seen = {tuple(str(r.get(k)) for k in keys) for r in records.values()}
    if len(seen) > 1:
        raise VlmrError(f"the agents of arm {arm!r} were trained on different rewards or envs; rerun the arm with "
                        "`vlmr compare CONFIG --arm ARM --force`")
    first = next(iter(records.values()))
    if first["reward_model"] is None:
        raise VlmrError(f"arm {arm!r} trained on the env's own reward: it has no reward model to refine; choose an "
                        "arm with a reward model (e.g. adapted)")
    return {k: first[k] for k in keys}


def check_trained_reward(trained_on: dict, arm: str) -> None:
    """The arm's reward model and calibration files are still the ones its agents were trained with."""
    from vlmr.finetune.reward_model import reward_model_id

    path, cal = trained_on["reward_model"], trained_on["calibration"]
    if not Path(path).is_dir() or reward_model_id(path) != trained_on["reward_model_id"]:
        raise VlmrError(f"reward model {path} of arm {arm!r} is missing or changed since its agents were trained "
                        f"(they trained on model {trained_on['reward_model_id'][:12]}); give the model they trained "
                        "on, or rerun `vlmr compare CONFIG --force`")
    if cal and (not Path(cal).is_file() or sha256_file(cal) != trained_on["calibration_sha256"]):
        raise VlmrError(f"calibration {cal} of arm {arm!r} is missing or changed since its agents were trained; "
                        "give the calibration they trained with, or rerun `vlmr compare CONFIG --force`")
