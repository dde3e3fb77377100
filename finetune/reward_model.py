"""The CLIP reward model: goals in, P(g|o) and rewards out, for whole batches of frames.

    rm = RewardModel.create("vlmr-tiny", goals=["go to the red ball", "go to the blue key"])
    rm = RewardModel.load("runs/demo/reward_model", calibration="runs/demo/reward_model/calibration.json")
    rm = RewardModel.load("runs/demo/reward_model", calibration=..., goals=["go to the purple box"])  # a new goal
    p = rm.probs(frames, ["go to the red ball"] * len(frames))   # frames: uint8 N x H x W x 3
    r = rm.reward(frames, goal_ids)                              # binary | prob | goal_baseline

A reward-model directory (docs/DESIGN.md) holds `reward_model.json` and, when
adapted, peft's `adapter_config.json` + `adapter_model.safetensors`, or full
weights in `open_clip_model.safetensors` after full training. Goals outside the saved goal set
(`goals=` at load, `add_goals`) are scored by vlmr.finetune.new_goals' rules (docs/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from vlmr.finetune.models import create_clip, image_preprocess_cfg, patch_size
from vlmr.finetune.new_goals import (
    check_new_goals,
    new_goal_fit,
    new_goal_prompts,
    warn_prompt_rule,
    warn_uncalibrated,
)
from vlmr.finetune.preprocess import check_frames, preprocess_frames
from vlmr.finetune.reward_math import (
    all_goal_log_probs,
    binary_reward,
    ensemble_text_embeddings,
    goal_baseline_reward,
    mixed_goal_log_probs,
    new_goal_log_probs,
    normalize,
)
from vlmr.finetune.spec import (  # noqa: F401  (the spec's names, imported from here before it had a module)
    GENERIC_NEGATIVES,
    REWARD_MODEL_VERSION,
    SPEC_FILE,
    RewardModelSpec,
    candidate_prompts,
    identity_hash,
    make_spec,
    read_spec,
    spec_file_fields,
)

from vlmr.core.calibration_file import read_calibration, reward_parameter_problem
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_dir, canonical_json, sha256_file
from vlmr.core.quality import quality_issue

WEIGHTS_FILE = "open_clip_model.safetensors"
ADAPTER_FILE = "adapter_model.safetensors"


def encode_candidates(clip, tokenizer, prompts: list[list[str]], device) -> torch.Tensor:
    """Text embeddings of every candidate, prompt-ensembled and normalised: (C, D). Differentiable."""
    flat = [p for group in prompts for p in group]
    emb = normalize(clip.encode_text(tokenizer(flat).to(device)).float())
    out, start = [], 0
    for group in prompts:
        out.append(ensemble_text_embeddings(emb[start:start + len(group)].unsqueeze(0))[0])
        start += len(group)
    return torch.stack(out)


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
        self.model_id = identity_hash(self.spec, adapter_sha256)  # the saved model's: goals added later leave it
        self.new_goals: list[str] = []  # goals outside the saved goal set, scored too (add_goals); after it in ids
        self.new_goal_fits: dict[str, str] = {}  # new goal -> the calibration fit it got ("fit.shared", ...)
        self.goal_to_index = {g: i for i, g in enumerate(self.spec.goals)}
        num_goals = len(self.spec.goals)
        self.register_buffer("temperatures", torch.full((num_goals,), float(spec.temperature)))
        self.register_buffer("thresholds", torch.full((num_goals,), float(spec.threshold)))
        self.spec_path: Path | None = None  # the reward_model.json it was loaded from
        self.calibration: dict | None = None
        self.calibration_path: Path | None = None
        self._text_cache: torch.Tensor | None = None
        self._new_text_cache: torch.Tensor | None = None
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
             strict: bool = False, goals: list[str] | None = None):
        """Load a reward-model directory; the adapter (if any) is merged into the weights for fast inference.

        strict: a calibration whose binary reward has goals without a guaranteed threshold is an error, and so
        are goals outside the calibrated goal set. goals: sentences to score besides the saved goal set
        (add_goals); saved goals among them are scored as before.
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
        model.spec_path = path / SPEC_FILE
        if calibration is not None:
            model.load_calibration(calibration, strict=strict)
        if goals:
            model.add_goals(goals, strict=strict)
        return model

    def save(self, path: str | Path, full_weights: bool = False) -> Path:
        """Write the reward-model directory atomically. full_weights=True stores the whole CLIP in the dir.
        Goals added with add_goals are not written: they are not part of the goal set the model was made for."""
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
            (tmp / SPEC_FILE).write_text(canonical_json(spec_file_fields(spec)))
        self.model_id = identity_hash(spec, adapter_sha)
        return path

    # ---------------------------------------------------------------- calibration
    def set_calibration(self, temperatures, thresholds) -> None:
        """Per-goal temperatures and thresholds in the order of `goals` (or one value for every goal)."""
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
        """Per-goal values for the saved goals; goals added with add_goals get the fit for new goals (not calibrated)."""
        data = read_calibration(path, model_id=self.model_id, goals=self.spec.goals)
        extra = [new_goal_fit(data, path, g) for g in self.new_goals]
        entries = data["goals"]
        weak = [g for g in self.spec.goals if entries[g].get("guaranteed") is False]
        if weak and self.spec.reward_mode == "binary":  # a 0/1 reward is only as good as its threshold
            crit = data.get("criterion", {})
            quality_issue(f"calibration {path}: {len(weak)} of {len(self.spec.goals)} goals have no threshold with a "
                          f"guaranteed precision of {crit.get('target_precision')} (confidence {crit.get('confidence')}"
                          f"): {', '.join(repr(g) for g in weak[:5])}{' ...' if len(weak) > 5 else ''}. Their binary "
                          "reward may pay for wrong frames; collect more val positives and recalibrate (its report "
                          "says how many each goal needs)", strict)
        if extra:
            warn_uncalibrated(path, self.new_goals, extra, strict)
        self.new_goal_fits = {g: name for g, (_, _, name) in zip(self.new_goals, extra)}
        self.set_calibration([entries[g]["temperature"] for g in self.spec.goals] + [t for t, _, _ in extra],
                             [entries[g]["threshold"] for g in self.spec.goals] + [b for _, b, _ in extra])
        self.calibration, self.calibration_path = data, Path(path)

    def add_goals(self, goals: list[str] | str, strict: bool = False) -> list[str]:
        """Score goal sentences outside the saved goal set too; returns those that were new (module new_goals).

        A new goal's softmax runs over the saved candidates plus itself; with a calibration it gets the fit for
        new goals (new_goals.new_goal_fit) and is not `calibrated` (a warning; strict: an error)."""
        new = check_new_goals(self.spec, goals, self.goal_to_index)
        if not new:
            return []
        warn_prompt_rule(self.spec, self.spec_path, new, strict)
        fits = [(float(self.spec.temperature), float(self.spec.threshold), "defaults")] * len(new)
        if self.calibration is not None:
            fits = [new_goal_fit(self.calibration, self.calibration_path, g) for g in new]
            warn_uncalibrated(self.calibration_path, new, fits, strict)
        for g in new:
            self.goal_to_index[g] = len(self.goal_to_index)
        self.new_goals = self.new_goals + new
        self.new_goal_fits.update({g: name for g, (_, _, name) in zip(new, fits)})
        self.temperatures = torch.cat([self.temperatures, self.temperatures.new_tensor([t for t, _, _ in fits])])
        self.thresholds = torch.cat([self.thresholds, self.thresholds.new_tensor([b for _, b, _ in fits])])
        self._new_text_cache = None
        return new

    @property
    def calibrated(self) -> dict[str, bool]:
        """Per goal: whether a loaded calibration fitted its temperature and threshold (never for new goals)."""
        return {g: self.calibration is not None and i < len(self.spec.goals) for i, g in enumerate(self.goals)}

    # ---------------------------------------------------------------- scoring
    @property
    def goals(self) -> list[str]:
        """Every goal this model scores: the saved goal set, then goals added with add_goals."""
        return self.spec.goals + self.new_goals if self.new_goals else self.spec.goals

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
                                        f"({len(self.goals)} goals, e.g. {self.goals[:3]}); add it with "
                                        "RewardModel.load(..., goals=[...]) or add_goals (`vlmr score --goal`)")
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
        self._text_cache = self._new_text_cache = None

    @torch.inference_mode()
    def text_embeddings(self) -> torch.Tensor:
        """(C, D) saved candidate embeddings, goals first then negatives; computed once, then cached."""
        if self._text_cache is None:
            with self._autocast():
                self._text_cache = encode_candidates(self.clip, self.tokenizer, candidate_prompts(self.spec),
                                                     self.device).float()
        return self._text_cache

    @torch.inference_mode()
    def new_goal_embeddings(self) -> torch.Tensor:
        """(K, D) embeddings of the goals added with add_goals, apart from the saved ones so those stay as they were."""
        if self._new_text_cache is None or len(self._new_text_cache) != len(self.new_goals):
            with self._autocast():
                self._new_text_cache = (encode_candidates(self.clip, self.tokenizer, [new_goal_prompts(self.spec, g)
                                        for g in self.new_goals], self.device).float() if self.new_goals
                                        else self.text_embeddings()[:0])
        return self._new_text_cache

    def goal_embeddings(self) -> torch.Tensor:
        """(len(goals), D) text embeddings of every goal, in the order of `goals`."""
        return torch.cat([self.text_embeddings()[:len(self.spec.goals)], self.new_goal_embeddings()])

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
        """(N, C + K) cosine similarities of each frame to every saved candidate caption, then to each new goal."""
        x = self.embed_images(frames)
        sims = x @ self.text_embeddings().T
        return torch.cat([sims, x @ self.new_goal_embeddings().T], dim=1) if self.new_goals else sims

    def _log_probs(self, sims, idx) -> torch.Tensor:
        saved = len(self.spec.goals) + len(self.spec.negatives)
        return mixed_goal_log_probs(sims, idx, self.temperatures[idx], len(self.spec.goals), saved)

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
        return self._log_probs(self.similarities(frames), idx).exp()

    @torch.inference_mode()
    def all_probs(self, frames) -> torch.Tensor:
        """P(g | o_n) for every goal g of `goals`: (N, G + K)."""
        sims, num_goals = self.similarities(frames), len(self.spec.goals)
        saved = all_goal_log_probs(sims[:, :num_goals + len(self.spec.negatives)], self.temperatures[:num_goals])
        if not self.new_goals:
            return saved.exp()
        new = new_goal_log_probs(sims, self.temperatures[num_goals:], num_goals + len(self.spec.negatives))
        return torch.cat([saved, new], dim=1).exp()

    @torch.inference_mode()
    def reward(self, frames, goal_ids) -> torch.Tensor:
        """Reward of each frame for its own goal, by `spec.reward_mode`: (N,)."""
        idx = self.goal_index(goal_ids)
        self._check_batch(frames, idx)
        if self.spec.reward_mode == "goal_baseline":  # the baseline is the saved model's, new goals or not
            text = self.text_embeddings()
            num_goals = len(self.spec.goals)
            baseline = normalize((text[num_goals:] if len(self.spec.negatives) else text[:num_goals]).mean(0))
            return goal_baseline_reward(self.embed_images(frames), self.goal_embeddings()[idx], baseline,
                                        self.spec.alpha)
        p = self._log_probs(self.similarities(frames), idx).exp()
        return binary_reward(p, self.thresholds[idx]) if self.spec.reward_mode == "binary" else p


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())
