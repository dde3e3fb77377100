"""The CLIP reward model: goals in, P(g|o) and rewards out, for whole batches of frames.

    rm = RewardModel.create("vlmr-tiny", goals=["go to the red ball", "go to the blue key"])
    rm = RewardModel.load("runs/demo/reward_model", calibration="runs/demo/reward_model/calibration.json")
    p = rm.probs(frames, ["go to the red ball"] * len(frames))   # frames: uint8 N x H x W x 3
    r = rm.reward(frames, goal_ids)                              # binary | prob | goal_baseline

A reward-model directory (docs/DESIGN.md) holds `reward_model.json` and, when
adapted, peft's `adapter_config.json` + `adapter_model.safetensors`, or full
weights in `open_clip_model.safetensors` after full training.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from vlmr.finetune.models import create_clip, image_preprocess_cfg, patch_size
from vlmr.finetune.preprocess import check_frames, preprocess_frames
from vlmr.finetune.reward_math import (
    all_goal_log_probs,
    binary_reward,
    ensemble_text_embeddings,
    goal_baseline_reward,
    goal_log_probs,
    normalize,
)

from vlmr.core.calibration_file import read_calibration, reward_parameter_problem
from vlmr.core.config import PositiveFloat, PositiveInt, build_config, config_dataclass
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_dir, canonical_json, read_json, sha256_file, sha256_text
from vlmr.core.quality import quality_issue

REWARD_MODEL_VERSION = 1
SPEC_FILE = "reward_model.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"
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
    negatives: list[str] = dataclasses.field(default_factory=list)  # extra candidate captions that are never goals
    reward_mode: Literal["binary", "prob", "goal_baseline"] = "binary"  # how P(g|o) becomes a reward
    alpha: UnitFloat = 0.5  # goal_baseline projection weight (vlmrm), in [0, 1]
    temperature: PositiveFloat = 0.01  # default tau_g when no calibration is given (CLIP's logit scale 100)
    threshold: UnitFloat = 0.5  # default beta_g when no calibration is given, in [0, 1]
    image_size: PositiveInt | None = None  # model input size, filled in from the architecture
    version: int = REWARD_MODEL_VERSION  # file format version

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


def make_spec(**fields) -> RewardModelSpec:
    return build_config(RewardModelSpec, fields, "reward model spec")


def candidate_prompts(spec: RewardModelSpec) -> list[list[str]]:
    """Prompts for every candidate caption: the goals first (in goal-set order), then the negatives."""
    def expand(caption):
        return [t.format(goal=caption) for t in spec.templates]
    return [spec.goal_prompts.get(g) or expand(g) for g in spec.goals] + [expand(n) for n in spec.negatives]


def encode_candidates(clip, tokenizer, prompts: list[list[str]], device) -> torch.Tensor:
    """Text embeddings of every candidate, prompt-ensembled and normalised: (C, D). Differentiable."""
    flat = [p for group in prompts for p in group]
    emb = normalize(clip.encode_text(tokenizer(flat).to(device)).float())
    out, start = [], 0
    for group in prompts:
        out.append(ensemble_text_embeddings(emb[start:start + len(group)].unsqueeze(0))[0])
        start += len(group)
    return torch.stack(out)


def identity_hash(spec: RewardModelSpec, adapter_sha256: str | None) -> str:
    """Stable id of a reward model: its spec (checkpoints by content, not path) and its adapter weights."""
    fields = dataclasses.asdict(spec)
    if fields["pretrained_sha256"]:
        fields["pretrained"] = None  # the path may move; the hash identifies the weights
    return sha256_text(canonical_json({"spec": fields, "adapter_sha256": adapter_sha256}))


def read_spec(path: str | Path) -> RewardModelSpec:
    """The spec of a reward-model directory, checked: its version, and (one line each) its default
    temperature and threshold, which a hand edit could set to values that silently change every reward."""
    file = Path(path) / SPEC_FILE
    raw = read_json(file, "reward model spec")
    if not isinstance(raw, dict) or raw.get("version") != REWARD_MODEL_VERSION:
        raise VlmrError(f"{file}: version {raw.get('version') if isinstance(raw, dict) else None!r} "
                        f"is not readable by this vlmr (reads version {REWARD_MODEL_VERSION})")
    for key in ("temperature", "threshold"):
        problem = reward_parameter_problem(key, raw[key]) if key in raw else None
        if problem:
            raise VlmrError(f"{file}: {problem} (the default for every goal without a calibration); restore the "
                            "file or export the reward model again")
    return build_config(RewardModelSpec, raw, str(file))


def reward_model_id(path: str | Path) -> str:
    """The identity hash of a reward-model directory, without loading any weights."""
    path = Path(path)
    spec = read_spec(path)
    adapter = path / ADAPTER_FILE
    return identity_hash(spec, sha256_file(adapter) if adapter.is_file() else None)


class RewardModel(nn.Module):
    def __init__(self, clip: nn.Module, tokenizer, spec: RewardModelSpec, pretrained_path: Path | None = None,
                 adapter_sha256: str | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.clip, self.tokenizer = clip, tokenizer
        self.pre = image_preprocess_cfg(clip)
        self.patch = patch_size(clip)
        self.spec = dataclasses.replace(spec, image_size=self.pre["size"][0])
        self.pretrained_path = pretrained_path  # absolute path of a checkpoint file, when there is one
        self.model_id = identity_hash(self.spec, adapter_sha256)
        self.goal_to_index = {g: i for i, g in enumerate(self.spec.goals)}
        num_goals = len(self.spec.goals)
        self.register_buffer("temperatures", torch.full((num_goals,), float(spec.temperature)))
        self.register_buffer("thresholds", torch.full((num_goals,), float(spec.threshold)))
        self.calibration: dict | None = None
        self._text_cache: torch.Tensor | None = None
        self.to(device)

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(cls, arch: str, goals: list[str], pretrained: str | None = None, device="cpu", **spec_fields):
        """A zero-shot reward model from an open_clip architecture and pretrained tag, hub id or checkpoint."""
        sha = None
        if pretrained and Path(pretrained).is_file():
            sha = sha256_file(pretrained)
            pretrained = str(Path(pretrained).resolve())
        spec = make_spec(arch=arch, goals=list(goals), pretrained=pretrained, pretrained_sha256=sha, **spec_fields)
        clip, tokenizer = create_clip(arch, pretrained, device)
        return cls(clip, tokenizer, spec, Path(pretrained) if sha else None, device=device)

    @classmethod
    def load(cls, path: str | Path, calibration: str | Path | None = None, device="cpu", merge_lora: bool = True,
             strict: bool = False):
        """Load a reward-model directory; the adapter (if any) is merged into the weights for fast inference.

        strict: a calibration whose binary reward has goals without a guaranteed threshold is an error.
        """
        from peft import PeftModel

        path = Path(path)
        spec = read_spec(path)
        ckpt = None
        if spec.pretrained_sha256:
            ckpt = (path / spec.pretrained).resolve()
            if not ckpt.is_file():
                raise VlmrError(f"{path / SPEC_FILE} names base checkpoint {spec.pretrained}, which is missing "
                                f"(looked at {ckpt}); restore it or refit the reward model")
            if sha256_file(ckpt) != spec.pretrained_sha256:
                raise VlmrError(f"base checkpoint {ckpt} changed since {path} was made (sha256 differs); "
                                "this adapter no longer matches its base model")
        clip, tokenizer = create_clip(spec.arch, str(ckpt) if ckpt else spec.pretrained, device)
        adapter_sha = None
        if (path / ADAPTER_FILE).is_file():
            adapter_sha = sha256_file(path / ADAPTER_FILE)
            clip = PeftModel.from_pretrained(clip, str(path))
            if merge_lora:
                clip = clip.merge_and_unload()
            clip.eval()
        model = cls(clip, tokenizer, spec, ckpt, adapter_sha, device)
        if calibration is not None:
            model.load_calibration(calibration, strict=strict)
        return model

    def save(self, path: str | Path, full_weights: bool = False) -> Path:
        """Write the reward-model directory atomically. full_weights=True stores the whole CLIP in the dir."""
        from peft import PeftModel
        from safetensors.torch import save_file

        path = Path(path)
        spec = self.spec
        random_base = self.pretrained_path is None and not spec.pretrained and not spec.arch.startswith("hf-hub:")
        if random_base and isinstance(self.clip, PeftModel) and not full_weights:
            raise VlmrError("this adapter sits on a randomly initialised base that was never saved; save the base "
                            "weights as a checkpoint first and create the model from that file")
        full_weights = full_weights or random_base  # random init is only reproducible if stored
        with atomic_dir(path) as tmp:
            adapter_sha = None
            if isinstance(self.clip, PeftModel) and not full_weights:
                self.clip.save_pretrained(str(tmp))
                adapter_sha = sha256_file(tmp / ADAPTER_FILE)
            if full_weights:
                clip = self.clip.merge_and_unload() if isinstance(self.clip, PeftModel) else self.clip
                state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
                save_file(state, str(tmp / WEIGHTS_FILE))
                spec = dataclasses.replace(spec, pretrained=WEIGHTS_FILE, pretrained_sha256=sha256_file(tmp / WEIGHTS_FILE))
            elif self.pretrained_path is not None:
                rel = Path(_relpath(self.pretrained_path, path))
                spec = dataclasses.replace(spec, pretrained=str(rel))
            (tmp / SPEC_FILE).write_text(canonical_json(dataclasses.asdict(spec)))
        self.model_id = identity_hash(spec, adapter_sha)
        return path

    # ---------------------------------------------------------------- calibration
    def set_calibration(self, temperatures, thresholds) -> None:
        """Per-goal temperatures and thresholds in goal-set order (or one value for every goal)."""
        for key, values in (("temperature", temperatures), ("threshold", thresholds)):
            values = torch.as_tensor(values, dtype=torch.float64).reshape(-1).tolist()
            if len(values) not in (1, len(self.goals)):
                raise VlmrError(f"set_calibration: got {len(values)} {key} values for {len(self.goals)} goals")
            for goal, value in zip(self.goals if len(values) > 1 else ["(every goal)"], values):
                problem = reward_parameter_problem(key, value)
                if problem:
                    raise VlmrError(f"set_calibration: goal {goal!r}: {problem}")
        self.temperatures.copy_(torch.as_tensor(temperatures, dtype=torch.float32))
        self.thresholds.copy_(torch.as_tensor(thresholds, dtype=torch.float32))

    def load_calibration(self, path: str | Path, strict: bool = False) -> None:
        data = read_calibration(path, model_id=self.model_id, goals=self.spec.goals)
        entries = data["goals"]
        weak = [g for g in self.spec.goals if entries[g].get("guaranteed") is False]
        if weak and self.spec.reward_mode == "binary":  # a 0/1 reward is only as good as its threshold
            crit = data.get("criterion", {})
            quality_issue(f"calibration {path}: {len(weak)} of {len(self.spec.goals)} goals have no threshold with a "
                          f"guaranteed precision of {crit.get('target_precision')} (confidence {crit.get('confidence')}"
                          f"): {', '.join(repr(g) for g in weak[:5])}{' ...' if len(weak) > 5 else ''}. Their binary "
                          "reward may pay for wrong frames; collect more val positives and recalibrate (its report "
                          "says how many each goal needs)", strict)
        self.set_calibration([entries[g]["temperature"] for g in self.spec.goals],
                             [entries[g]["threshold"] for g in self.spec.goals])
        self.calibration = data

    # ---------------------------------------------------------------- scoring
    @property
    def goals(self) -> list[str]:
        return self.spec.goals

    @property
    def device(self) -> torch.device:
        return self.temperatures.device

    def goal_index(self, goal_ids) -> torch.Tensor:
        """Goal sentences or integer ids -> a long tensor of ids, with a clear error for unknown goals.

        A single sentence or id is one goal. Anything else that is not an integer (0.0, 1.7, True) is refused:
        truncating it would silently score the frame for another goal."""
        if isinstance(goal_ids, (str, int, np.integer)):
            goal_ids = [goal_ids]
        integer_array = (goal_ids.dtype.kind in "iu" if isinstance(goal_ids, np.ndarray) else
                         isinstance(goal_ids, torch.Tensor) and not goal_ids.dtype.is_floating_point
                         and not goal_ids.dtype.is_complex and goal_ids.dtype != torch.bool)
        if integer_array:
            idx = torch.as_tensor(goal_ids).long().reshape(-1).cpu()
        else:
            if isinstance(goal_ids, (torch.Tensor, np.ndarray)):
                goal_ids = goal_ids.reshape(-1).tolist()
            idx_list = []
            for g in goal_ids:
                if isinstance(g, str):
                    if g not in self.goal_to_index:
                        raise VlmrError(f"goal {g!r} is not in this reward model's goal set "
                                        f"({len(self.goals)} goals, e.g. {self.goals[:3]})")
                    idx_list.append(self.goal_to_index[g])
                elif isinstance(g, (int, np.integer)) and not isinstance(g, (bool, np.bool_)):
                    idx_list.append(int(g))
                else:
                    raise VlmrError(f"goal id {g!r} ({type(g).__name__}) is neither a goal sentence nor an integer "
                                    "index into the goal set; give ints (whole-number floats: ids.astype(int))")
            idx = torch.tensor(idx_list, dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self.goals)):
            raise VlmrError(f"goal id {int(idx.max() if idx.max() >= len(self.goals) else idx.min())} is out of "
                            f"range for a goal set of {len(self.goals)} goals")
        return idx.to(self.device)

    def invalidate_text_cache(self) -> None:
        self._text_cache = None

    @torch.inference_mode()
    def text_embeddings(self) -> torch.Tensor:
        """(C, D) candidate embeddings, goals first then negatives; computed once, then cached."""
        if self._text_cache is None:
            with self._autocast():
                self._text_cache = encode_candidates(self.clip, self.tokenizer, candidate_prompts(self.spec),
                                                     self.device).float()
        return self._text_cache

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.inference_mode()
    def embed_images(self, frames) -> torch.Tensor:
        x = preprocess_frames(frames, self.pre["size"], self.pre["mean"], self.pre["std"],
                              self.pre["interpolation"], self.device, self.patch)
        with self._autocast():
            return normalize(self.clip.encode_image(x).float())

    @torch.inference_mode()
    def similarities(self, frames) -> torch.Tensor:
        """(N, C) cosine similarities of each frame to every candidate caption."""
        return self.embed_images(frames) @ self.text_embeddings().T

    def _check_batch(self, frames, idx):
        check_frames(frames)  # first: a single H x W x 3 frame would count as H frames below
        if len(frames) != len(idx):
            raise VlmrError(f"got {len(frames)} frames but {len(idx)} goal ids; give one goal per frame "
                            "(the same goal for every frame: [goal] * len(frames))")

    @torch.inference_mode()
    def probs(self, frames, goal_ids) -> torch.Tensor:
        """P(g_n | o_n) for each frame n with its own goal g_n: (N,)."""
        idx = self.goal_index(goal_ids)
        self._check_batch(frames, idx)
        return goal_log_probs(self.similarities(frames), idx, self.temperatures[idx]).exp()

    @torch.inference_mode()
    def all_probs(self, frames) -> torch.Tensor:
        """P(g | o_n) for every goal g: (N, G)."""
        return all_goal_log_probs(self.similarities(frames), self.temperatures).exp()

    @torch.inference_mode()
    def reward(self, frames, goal_ids) -> torch.Tensor:
        """Reward of each frame for its own goal, by `spec.reward_mode`: (N,)."""
        idx = self.goal_index(goal_ids)
        self._check_batch(frames, idx)
        if self.spec.reward_mode == "goal_baseline":
            text = self.text_embeddings()
            num_goals = len(self.goals)
            baseline = normalize((text[num_goals:] if len(self.spec.negatives) else text[:num_goals]).mean(0))
            return goal_baseline_reward(self.embed_images(frames), text[idx], baseline, self.spec.alpha)
        p = goal_log_probs(self.similarities(frames), idx, self.temperatures[idx]).exp()
        return binary_reward(p, self.thresholds[idx]) if self.spec.reward_mode == "binary" else p


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())
