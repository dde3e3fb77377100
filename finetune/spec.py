"""The reward model's spec: everything that defines it besides its weights, stored as reward_model.json.

    spec = make_spec(arch="vlmr-tiny", goals=["go to the red ball", "go to the blue key"])
    spec = read_spec("runs/demo/reward_model")       # checked: version, default temperature and threshold
    identity_hash(spec, adapter_sha256)              # the model's identity, which a calibration is tied to

Format in docs/DESIGN.md ("File formats"). Version 2 adds `goal_templates` (the rule that made the
per-goal prompts); a spec without it is written as version 1, byte for byte what older vlmr wrote.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from vlmr.finetune.goal_rules import GoalTemplate, rule_prompts

from vlmr.core.calibration_file import reward_parameter_problem
from vlmr.core.config import PositiveFloat, PositiveInt, build_config, config_dataclass
from vlmr.core.errors import VlmrError
from vlmr.core.files import canonical_json, read_json, sha256_text

REWARD_MODEL_VERSION = 2  # 2: goal_templates; a spec without them is still written as version 1
SPEC_FILE = "reward_model.json"
UnitFloat = Annotated[float, Field(ge=0, le=1)]  # in [0, 1]; NaN fails the bounds too
# captions of frames that show no goal, for a model with one goal: its softmax needs something to compare with
GENERIC_NEGATIVES = ("an empty room", "a blank image", "a plain wall", "an empty floor")


@config_dataclass
class RewardModelSpec:
    """Everything that defines a reward model besides its weights; stored as reward_model.json."""

    arch: str  # open_clip architecture (vlmr-tiny, ViT-B-32, ...) or hf-hub:org/repo
    goals: list[str]  # the goal set: one sentence per goal
    pretrained: str | None = None  # open_clip tag, checkpoint path (relative to the dir when inside it), or none
    pretrained_sha256: str | None = None  # sha256 of the checkpoint file when `pretrained` is a file
    templates: list[str] = dataclasses.field(default_factory=lambda: ["{goal}"])  # prompt templates, ensembled
    goal_prompts: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # per-goal prompts, replace templates
    # the rule that made goal_prompts, per goal family (vlmr.finetune.goal_rules): prompts for goals added at load
    goal_templates: dict[str, GoalTemplate] = dataclasses.field(default_factory=dict)
    negatives: list[str] = dataclasses.field(default_factory=list)  # extra candidate captions that are never goals
    reward_mode: Literal["binary", "prob", "goal_baseline"] = "binary"  # how P(g|o) becomes a reward
    alpha: UnitFloat = 0.5  # goal_baseline projection weight (vlmrm), in [0, 1]
    temperature: PositiveFloat = 0.01  # default tau_g when no calibration is given (CLIP's logit scale 100)
    threshold: UnitFloat = 0.5  # default beta_g when no calibration is given, in [0, 1]
    image_size: PositiveInt | None = None  # model input size, filled in from the architecture
    version: int | None = None  # file format version: 2 with goal_templates, else 1 (older vlmr reads it); filled in

    def __post_init__(self):
        if not self.goals:
            raise ValueError("the goal set is empty; give at least one goal sentence")
        if any(not g.strip() for g in self.goals + self.negatives):
            raise ValueError("a goal or negative caption is empty; give each one as a sentence (`--goal \"go to the "
                             "red ball\"`)")
        dupes = sorted({g for g in self.goals if self.goals.count(g) > 1})
        if dupes:
            raise ValueError(f"the goal set has duplicate goals: {dupes}")
        if not self.templates or any("{goal}" not in t for t in self.templates):
            raise ValueError(f"every prompt template must contain '{{goal}}', got {self.templates}")
        unknown = [g for g in self.goal_prompts if g not in self.goals]
        if unknown:
            raise ValueError(f"goal_prompts names goals that are not in the goal set: {unknown}")
        clash = [n for n in self.negatives if n in self.goals]
        if clash:
            raise ValueError(f"negative captions may not also be goals: {clash}")
        if len(self.goals) + len(self.negatives) < 2:  # softmax over one candidate: P(g|o) = 1 for any frame
            raise ValueError(f"the goal {self.goals[0]!r} alone has nothing to be compared with, so P(g|o) would be 1 "
                             "for every frame: add negative captions of what is not the goal (negatives=[...], "
                             "`vlmr score --negative CAPTION`; e.g. GENERIC_NEGATIVES: "
                             f"{', '.join(repr(n) for n in GENERIC_NEGATIVES[:2])}), or more goals")
        needed = 2 if self.goal_templates else 1  # an older vlmr must refuse the rule by version, not by key
        if self.version is None:
            self.version = needed
        elif not needed <= self.version <= REWARD_MODEL_VERSION:
            raise ValueError(f"version {self.version} cannot hold this spec (goal_templates need version 2)")
        for g in self.goals if self.goal_templates else ():  # new goals must be prompted as the saved ones were
            made = rule_prompts(self.goal_templates, g)
            if made is not None and made != self.goal_prompts.get(g):
                raise ValueError(f"goal_templates give goal {g!r} the prompts {made}, but its goal_prompts are "
                                 f"{self.goal_prompts.get(g)}: store the rule that made the per-goal prompts")


def make_spec(**fields) -> RewardModelSpec:
    return build_config(RewardModelSpec, fields, "reward model spec")


def candidate_prompts(spec: RewardModelSpec) -> list[list[str]]:
    """Prompts for every candidate caption: the goals first (in goal-set order), then the negatives."""
    def expand(caption):
        return [t.format(goal=caption) for t in spec.templates]
    return [spec.goal_prompts.get(g) or expand(g) for g in spec.goals] + [expand(n) for n in spec.negatives]


def spec_file_fields(spec: RewardModelSpec) -> dict:
    """The spec as reward_model.json holds it. Without a rule, goal_templates is left out: such a file is what
    vlmr wrote before the rule existed, readable by it, and the model keeps its identity hash."""
    fields = dataclasses.asdict(spec)
    if not fields["goal_templates"]:
        del fields["goal_templates"]
    return fields


def identity_hash(spec: RewardModelSpec, adapter_sha256: str | None) -> str:
    """Stable id of a reward model: its spec (checkpoints by content, not path) and its adapter weights."""
    fields = spec_file_fields(spec)
    if fields["pretrained_sha256"]:
        fields["pretrained"] = None  # the path may move; the hash identifies the weights
    return sha256_text(canonical_json({"spec": fields, "adapter_sha256": adapter_sha256}))


def read_spec(path: str | Path) -> RewardModelSpec:
    """The spec of a reward-model directory, checked: its version, and (one line each) its default
    temperature and threshold, which a hand edit could set to values that silently change every reward."""
    file = Path(path) / SPEC_FILE
    raw = read_json(file, "reward model spec")
    if not isinstance(raw, dict) or raw.get("version") not in range(1, REWARD_MODEL_VERSION + 1):
        raise VlmrError(f"{file}: version {raw.get('version') if isinstance(raw, dict) else None!r} "
                        f"is not readable by this vlmr (reads versions 1 to {REWARD_MODEL_VERSION}); upgrade vlmr")
    for key in ("temperature", "threshold"):
        problem = reward_parameter_problem(key, raw[key]) if key in raw else None
        if problem:
            raise VlmrError(f"{file}: {problem} (the default for every goal without a calibration); restore the "
                            "file or export the reward model again")
    return build_config(RewardModelSpec, raw, str(file))
