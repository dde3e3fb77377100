"""`VLMReward`: a gymnasium vector-env wrapper whose reward comes from a CLIP reward model.

    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    envs = SyncVectorEnv([make_env] * 8, autoreset_mode=AutoresetMode.DISABLED)   # or NEXT_STEP
    rm = RewardModel.load("runs/demo/adapted", calibration="runs/demo/adapted/calibration.json")
    envs = VLMReward(envs, rm, cache_size=100_000)
    obs, info = envs.reset(seed=0)
    obs, reward, terminated, truncated, info = envs.step(actions)
    info["gt_reward"], info["gt_success"], info["vlm_success"], info["final_obs"]
    envs.cache_stats                        # {"frames", "hits", "model_frames", "entries"}

Each step renders every sub-env (`env.call("render")`, or `render_fn`), scores
all frames for their own episode's mission in ONE batched `RewardModel.reward`
call, and returns that as the reward. Works on any vector env whose sub-envs
render RGB uint8 frames and expose their goal sentence (the `mission`
attribute, or `mission_fn`).

Semantics
- terminate_on_reward (default): the episode ends when the reward "fires", as
  with the paper's sparse binary goal reward. "Fires" means reward >= 0.5 in
  `binary` mode, P(g|o) >= beta_g in `prob` mode; `goal_baseline` needs an
  explicit `success_threshold`.
- Ground truth stays in info: `gt_reward` (the env's own reward), `gt_success`
  (the env terminated with a positive reward: MiniGrid/BabyAI success); also
  `vlm_reward`, `vlm_success` (fired) and `goal_id`, each with its `_key` mask.
  The rest of info is the inner env's step info (for a finished env, that of
  its last step; its reset info is dropped).
- Autoreset: the terminal frame must be rendered before the sub-env resets, so
  the wrapped env must use AutoresetMode.NEXT_STEP or DISABLED; SAME_STEP is an
  error. The wrapper itself resets every finished sub-env at once (inner
  terminations, truncations and reward terminations alike, via `reset_mask`)
  and so presents SAME_STEP semantics: the returned obs of a finished env is
  the first obs of its next episode and the terminal obs is in
  info["final_obs"] (mask info["_final_obs"]), like gymnasium's SAME_STEP.
- The frame cache maps (hash of the frame bytes, goal id) -> reward, LRU,
  `cache_size` entries (0 = off). Grid worlds repeat frames a lot. Pass
  `cache=FrameCache(...)` instead to share one between wrappers of the same
  reward model and calibration (exact: the reward is a function of both).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, VectorEnv, VectorWrapper

from vlmr.core.errors import VlmrError


class FrameCache:
    """LRU map from (frame hash, goal id) to a reward."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.data: OrderedDict[tuple[bytes, int], float] = OrderedDict()

    @staticmethod
    def frame_key(frame: np.ndarray) -> bytes:
        frame = np.ascontiguousarray(frame)
        h = hashlib.blake2b(digest_size=16)
        h.update(np.asarray(frame.shape, dtype=np.int64).tobytes())
        h.update(memoryview(frame).cast("B"))
        return h.digest()

    def get(self, key):
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key, value: float) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.max_entries:
            self.data.popitem(last=False)


def _autoreset_mode(env: VectorEnv) -> AutoresetMode:
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)


def _slice_obs(obs, i: int):
    """Sub-env i's observation out of a batched one (arrays, dicts and tuples of arrays)."""
    if isinstance(obs, dict):
        return {k: _slice_obs(v, i) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_slice_obs(v, i) for v in obs)
    return np.array(obs[i], copy=True)


class VLMReward(VectorWrapper):
    """Replace a vector env's reward with a reward model's, batched over all sub-envs per step."""

    def __init__(self, env: VectorEnv, reward_model, *, terminate_on_reward: bool = True,
                 success_threshold: float | None = None, cache_size: int = 0, cache: FrameCache | None = None,
                 render_fn: Callable[[VectorEnv], Sequence[np.ndarray]] | None = None,
                 mission_fn: Callable[[VectorEnv], Sequence[str]] | None = None):
        super().__init__(env)
        mode = _autoreset_mode(env)
        if mode == AutoresetMode.SAME_STEP:
            raise VlmrError("VLMReward needs the wrapped vector env in autoreset mode NEXT_STEP or DISABLED: "
                            "in SAME_STEP mode a finished sub-env resets before its terminal frame can be rendered. "
                            "Create it with autoreset_mode=AutoresetMode.DISABLED; the wrapper resets finished envs "
                            "itself and presents SAME_STEP semantics.")
        base = env.unwrapped
        if isinstance(base, AsyncVectorEnv) and mode == AutoresetMode.NEXT_STEP and not base.shared_memory:
            # gymnasium's async worker does not clear its autoreset flag on a masked reset without shared
            # memory, so it would reset those envs a second time on the next step.
            raise VlmrError("VLMReward over an AsyncVectorEnv with shared_memory=False needs "
                            "autoreset_mode=AutoresetMode.DISABLED (NEXT_STEP would reset finished envs twice)")
        self.reward_model = reward_model
        self.terminate_on_reward = terminate_on_reward
        mode_name = reward_model.spec.reward_mode
        if success_threshold is None and mode_name == "goal_baseline" and terminate_on_reward:
            raise VlmrError("reward_mode 'goal_baseline' has no natural success threshold; pass success_threshold "
                            "to VLMReward or set terminate_on_reward=False")
        self.success_threshold = success_threshold
        self.render_fn = render_fn or (lambda e: e.call("render"))
        self.mission_fn = mission_fn or _default_missions
        self.cache = cache if cache is not None else FrameCache(cache_size) if cache_size > 0 else None
        self.frames_scored = 0
        self.model_frames = 0
        self.missions: list[str] = []
        self._goal_ids = np.zeros(self.num_envs, dtype=np.int64)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    # ------------------------------------------------------------------ helpers
    @property
    def cache_stats(self) -> dict:
        """This wrapper's counts: frames scored, served from the cache (hits), and sent to the model."""
        hits = self.frames_scored - self.model_frames
        return {"frames": self.frames_scored, "hits": hits, "model_frames": self.model_frames,
                "entries": len(self.cache.data) if self.cache else 0,
                "hit_rate": hits / self.frames_scored if self.frames_scored else 0.0}

    def _refresh_missions(self) -> None:
        try:
            missions = list(self.mission_fn(self.env))
        except AttributeError as e:
            raise VlmrError(f"cannot read the sub-envs' goal sentences ({e}); the env needs a `mission` attribute, "
                            "or pass mission_fn to VLMReward") from None
        rm_goals = set(self.reward_model.goals)
        missing = sorted({m for m in missions if m not in rm_goals})
        if missing:
            raise VlmrError(f"the reward model's goal set does not cover the env's missions: {missing[:5]} are not "
                            f"among its {len(rm_goals)} goals (e.g. {self.reward_model.goals[:3]}). Use a reward "
                            "model trained for this env's goal family, or an env whose missions it covers.")
        self.missions = missions
        self._goal_ids = self.reward_model.goal_index(missions).cpu().numpy()

    def _render(self) -> np.ndarray:
        frames = self.render_fn(self.env)
        if frames is None or any(f is None for f in frames):
            raise VlmrError("the env cannot render: render() returned None. Create the sub-envs with "
                            "render_mode='rgb_array' (or pass render_fn to VLMReward)")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
            raise VlmrError(f"the env's render() must return RGB uint8 H x W x 3 frames, got dtype {first.dtype} "
                            f"shape {first.shape}; use render_mode='rgb_array' (not 'human' or 'ansi')")
        return np.stack([np.asarray(f) for f in frames])

    def score(self, frames: np.ndarray, goal_ids: np.ndarray) -> np.ndarray:
        """Rewards (N,) for frames with their goal ids: cache hits first, one batched model call for the rest."""
        n = len(frames)
        self.frames_scored += n
        rewards = np.zeros(n, dtype=np.float32)
        if self.cache is None:
            rewards[:] = self._model_reward(frames, goal_ids)
            return rewards
        keys = [(FrameCache.frame_key(f), int(g)) for f, g in zip(frames, goal_ids)]
        todo: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            value = self.cache.get(key) if key not in todo else None
            if value is None:
                todo.setdefault(key, []).append(i)
            else:
                rewards[i] = value
        if todo:
            first = [idx[0] for idx in todo.values()]
            values = self._model_reward(frames[first], goal_ids[first])
            for (key, idx), v in zip(todo.items(), values):
                rewards[idx] = v  # a frame repeated within the batch is scored once
                self.cache.put(key, float(v))
        return rewards

    def _model_reward(self, frames: np.ndarray, goal_ids: np.ndarray) -> np.ndarray:
        self.model_frames += len(frames)
        ids = torch.as_tensor(goal_ids, dtype=torch.long)
        return self.reward_model.reward(frames, ids).float().cpu().numpy()

    def fired(self, rewards: np.ndarray, goal_ids: np.ndarray) -> np.ndarray:
        """Whether each reward counts as goal reached (the termination and precision decision)."""
        if self.success_threshold is not None:
            return rewards >= self.success_threshold
        if self.reward_model.spec.reward_mode == "prob":
            return rewards >= self.reward_model.thresholds.cpu().numpy()[goal_ids]
        return rewards >= 0.5

    # ------------------------------------------------------------------ gymnasium API
    def call(self, name: str, *args, **kwargs):
        return self.env.call(name, *args, **kwargs)

    def get_attr(self, name: str):
        return self.env.get_attr(name)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._refresh_missions()
        self._render()  # fail at reset, not mid-training, when the env cannot render
        return obs, info

    def step(self, actions):
        obs, env_reward, terminated, truncated, info = self.env.step(actions)
        goal_ids = self._goal_ids  # this episode's goals; they change only at the resets below
        rewards = self.score(self._render(), goal_ids)
        fired = self.fired(rewards, goal_ids)
        env_reward = np.asarray(env_reward, dtype=np.float64)
        gt_success = np.asarray(terminated, dtype=bool) & (env_reward > 0)
        terminated = np.asarray(terminated, dtype=bool) | (fired & self.terminate_on_reward)
        truncated = np.asarray(truncated, dtype=bool) & ~terminated
        ones = np.ones(self.num_envs, dtype=bool)
        info = dict(info)
        for key, value in (("gt_reward", env_reward), ("gt_success", gt_success), ("vlm_success", fired),
                           ("vlm_reward", rewards.astype(np.float64)), ("goal_id", goal_ids.copy())):
            info[key], info["_" + key] = value, ones
        done = terminated | truncated
        if done.any():
            final = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = _slice_obs(obs, i)
            info["final_obs"], info["_final_obs"] = final, done.copy()
            obs, _ = self.env.reset(options={"reset_mask": done.copy()})
            self._refresh_missions()
        return obs, rewards.astype(np.float64), terminated, truncated, info


def _default_missions(env: VectorEnv) -> list[str]:
    return list(env.get_attr("mission"))
