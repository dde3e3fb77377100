"""The PPO agent (actor-critic over observation features and a frozen goal vector), its goal vocabulary,
held-out evaluation on the env's own success, and the saved agent. Used by rl/agent/ppo.py's training loop.

    agent = Agent(obs_shape, "symbolic", goal_table, num_actions)
    success_rate = evaluate(agent, eval_envs, GoalLookup(goals, source), seeds, action_ids, device)
    save_agent(out / "agent.pt", agent, record)          # ppo.train, before result.json
    agent, record = load_agent("runs/compare/runs/adapted/seed-0/agent.pt")   # the rollout recorder

agent.pt (AGENT_VERSION) is a torch file readable with `torch.load(weights_only=True)`: the state_dict and
what rebuilds the policy and its env (obs shape and mode, goal vocabulary and table source, action ids and
names, hidden width, env id and kwargs, frame size) plus the reward it was trained on (reward-model path and
id, calibration path and sha256, terminate_on_reward).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from vlmr.rl.agent.vector_envs import env_goal_set, missions

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_bytes

if TYPE_CHECKING:
    from vlmr.rl.agent.ppo import PPOConfig

AGENT_FILE = "agent.pt"
AGENT_VERSION = 1


# ------------------------------------------------------------------------------------------------ agent
def layer_init(layer, std: float = math.sqrt(2), bias_const: float = 0.0):  # noqa: B008 (a constant)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Actor and critic MLPs over [observation features, frozen goal vector]."""

    SYMBOLIC_SIZES = (11, 6, 3)  # MiniGrid's encoding: object type, colour, state (one-hot blocks of these sizes)

    def __init__(self, obs_shape, obs_mode: str, goal_table: torch.Tensor, num_actions: int, hidden: int = 64):
        super().__init__()
        self.obs_mode = obs_mode
        self.register_buffer("goal_table", goal_table.float().clone())  # frozen: a buffer, never trained
        self.register_buffer("offsets", torch.tensor([0, 11, 17]))
        self.register_buffer("maxima", torch.tensor(self.SYMBOLIC_SIZES) - 1)
        if obs_mode == "symbolic":
            self.encoder = nn.Flatten()
        else:
            self.encoder = nn.Sequential(
                layer_init(nn.Conv2d(3, 16, 4, stride=2)), nn.ReLU(), layer_init(nn.Conv2d(16, 32, 3, stride=2)),
                nn.ReLU(), layer_init(nn.Conv2d(32, 32, 3, stride=2)), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            feat = self.features(torch.zeros(1, *obs_shape, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
        width = feat.shape[1]

        def mlp(out, std):
            return nn.Sequential(layer_init(nn.Linear(width, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.Tanh(), layer_init(nn.Linear(hidden, out), std))
        self.critic, self.actor = mlp(1, 1.0), mlp(num_actions, 0.01)

    def features(self, obs: torch.Tensor, goal_idx: torch.Tensor) -> torch.Tensor:
        if self.obs_mode == "symbolic":
            x = F.one_hot(torch.minimum(obs.long(), self.maxima) + self.offsets, 20).sum(-2).float()  # (B,7,7,20)
        else:
            x = obs.permute(0, 3, 1, 2).float() / 255.0
        return torch.cat([self.encoder(x), self.goal_table[goal_idx]], dim=1)

    def get_value(self, obs, goal_idx):
        return self.critic(self.features(obs, goal_idx)).squeeze(-1)

    def get_action_and_value(self, obs, goal_idx, action=None, greedy=False):
        x = self.features(obs, goal_idx)
        dist = torch.distributions.Categorical(logits=self.actor(x))
        if action is None:
            action = dist.probs.argmax(-1) if greedy else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(x).squeeze(-1)


def goal_vocabulary(cfg: PPOConfig, reward_model):
    """(goal sentences, frozen (G, D) table, source) for the policy's goal input."""
    if cfg.goal_encoding == "onehot":
        goals = cfg.goals or env_goal_set(cfg.env_id, cfg.env_kwargs) or (reward_model.goals if reward_model else None)
        if not goals:
            raise VlmrError(f"goal_encoding=onehot needs a goal set: {cfg.env_id} has no known one; set goals=[...]")
        return list(goals), torch.eye(len(goals)), "onehot"
    model = reward_model
    if cfg.goal_model is not None and (reward_model is None or Path(cfg.goal_model) != Path(cfg.reward_model)):
        from vlmr.finetune.reward_model import RewardModel

        # the env's missions outside its goal set are embedded as new goals (only the text tower is used here)
        model = RewardModel.load(cfg.goal_model, device=cfg.device, goals=env_goal_set(cfg.env_id, cfg.env_kwargs))
    if model is None:
        raise VlmrError("goal_encoding=text takes goal embeddings from a reward model, and the ground-truth reward "
                        "has none: set goal_model=DIR (a reward-model dir used only for its text embeddings) or "
                        "goal_encoding=onehot")
    table = model.goal_embeddings().detach().cpu().clone()
    return list(model.goals), table, f"text:{model.model_id[:12]}"


class GoalLookup:
    def __init__(self, goals: list[str], source: str):
        self.index = {g: i for i, g in enumerate(goals)}
        self.source = source

    def __call__(self, missions) -> np.ndarray:
        missing = sorted({m for m in missions if m not in self.index})
        if missing:
            raise VlmrError(f"the policy's goal vocabulary ({self.source}, {len(self.index)} goals) does not cover "
                            f"the env's missions {missing[:5]}; set goals=[...] or use a goal_model that covers them")
        return np.array([self.index[m] for m in missions], dtype=np.int64)


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(agent: Agent, envs, lookup: GoalLookup, seeds: list[int], action_ids: np.ndarray,
             device, greedy: bool = False) -> float:
    """Ground-truth success rate (the env's own: terminated with reward > 0) on episodes from `seeds`."""
    n, results = envs.num_envs, []
    for start in range(0, len(seeds), n):
        batch = seeds[start:start + n]
        obs, _ = envs.reset(seed=[*batch, *[batch[-1]] * (n - len(batch))])
        goals = lookup(missions(envs))
        active, success = np.arange(n) < len(batch), np.zeros(n, dtype=bool)
        while active.any():
            action, _, _, _ = agent.get_action_and_value(torch.as_tensor(obs, device=device),
                                                         torch.as_tensor(goals, device=device), greedy=greedy)
            obs, reward, term, trunc, _ = envs.step(action_ids[action.cpu().numpy()])
            success |= active & term & (np.asarray(reward) > 0)
            active &= ~(term | trunc)  # NEXT_STEP autoreset: a finished env's later steps are ignored
        results += success[: len(batch)].tolist()
    return float(np.mean(results))



# ------------------------------------------------------------------------------------------------ saved agents
def save_agent(path: str | Path, agent: Agent, record: dict) -> Path:
    """Write agent.pt atomically: `record` (plain values: what rebuilds the policy and its env) + the state_dict."""
    buf = io.BytesIO()
    torch.save({**record, "version": AGENT_VERSION, "obs_mode": agent.obs_mode,
                "state_dict": {k: v.detach().cpu() for k, v in agent.state_dict().items()}}, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_agent(path: str | Path, device="cpu") -> tuple[Agent, dict]:
    """(the policy in eval mode, its record) from an agent.pt written by save_agent."""
    path = Path(path)
    if not path.is_file():
        raise VlmrError(f"agent not found: {path}; `vlmr rl` and `vlmr compare` write one per finished run")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file, whatever torch says about it
        raise VlmrError(f"cannot read agent {path} ({type(e).__name__}: {str(e)[:120]}); rerun the PPO run that "
                        "wrote it") from None
    if not isinstance(record, dict) or record.get("version") != AGENT_VERSION:
        raise VlmrError(f"{path}: agent version {record.get('version') if isinstance(record, dict) else None!r} is "
                        f"not readable by this vlmr (reads version {AGENT_VERSION}); rerun the PPO run that wrote it")
    state = record["state_dict"]
    agent = Agent(tuple(record["obs_shape"]), record["obs_mode"], state["goal_table"], len(record["action_ids"]),
                  record["hidden"])
    agent.load_state_dict(state)
    return agent.to(device).eval(), {k: v for k, v in record.items() if k != "state_dict"}
