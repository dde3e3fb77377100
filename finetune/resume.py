"""What a resumed `vlmr finetune` may change: each setting is refused, applied or free.

    record = run_record(cfg, manifest, world)          # the settings a checkpoint is trained with
    history = check_resume(checkpoint, record, cfg)    # refuses or reports changes; returns the resume history
    apply_optim(checkpoint, optim_cfg, lr_factor)      # the optimizer and schedule follow the config, not the file

A checkpoint stores the run's settings as dotted keys (`checkpoint["vlmr"]["config"]`), with derived
ones: `data.content` (the train and val shards' sha256, so a moved dataset is the same data and a
recollected one is not), `data.mix_content` (data.mix_dir's train shards, likewise), `parent_adapter`
(the identity of the init_adapter reward model: other starting weights) and `processes` (how many
training processes shared each step). A rerun with
resume: true compares its own settings with them, key by key (docs/DESIGN.md, "Resuming a run"):

- refuse: the steps already taken computed something else (model, LoRA, loss, seed, data, batch,
  processes). One line lists the changed keys and offers resume=false.
- apply: the optimisation settings (optim.*, trainer.max_steps, trainer.grad_clip, trainer.precision)
  take effect from the checkpoint's step: the learning-rate schedule is rebuilt from the new values
  at that step. The change is printed and recorded in run.json and summary.json under "resumes".
  trainer.max_steps below the checkpoint's step is refused (the run is already past it).
- free: where the run lives and how it is logged, watched, validated, checkpointed or placed on
  hardware. It never blocks a resume.

model.goals and model.pretrained are left to ClipFinetuneModule.on_load_checkpoint, which compares
the goal set itself and the base weights by sha256 (a base file that moved with its run is the same).
"""

from __future__ import annotations

from vlmr.core.config import config_to_dict
from vlmr.core.errors import VlmrError
from vlmr.core.files import canonical_json, sha256_text

REFUSE, APPLY, FREE = "refuse", "apply", "free"

# the longest listed prefix of a dotted key decides; a key under none is refused (tests require every key listed)
POLICY = {
    "name": FREE, "output_dir": FREE, "resume": FREE, "logger": FREE, "wandb_project": FREE, "save_merged": FREE,
    "strict": FREE,  # strict never changes a number (docs/DESIGN.md, "Strict mode")
    "seed": REFUSE,  # init and data order
    "data": REFUSE,
    "data.dir": FREE,  # the path; the data itself is data.content
    "data.num_workers": FREE,
    "data.mix_dir": FREE,  # the path; the mix data itself is data.mix_content (data.mix_ratio is refused)
    "data.mix_content": REFUSE,
    "init_adapter": FREE,  # the path; the parent itself is parent_adapter (a moved parent is the same one)
    "parent_adapter": REFUSE,  # the starting weights
    "model": REFUSE,
    "model.goals": FREE, "model.pretrained": FREE,  # compared by on_load_checkpoint: goal set, base sha256
    "model.grad_checkpointing": FREE,  # recomputes activations: same numbers, less memory
    "model.goal_templates": FREE,  # prompts only goals outside the goal set; the spec checks it against goal_prompts
    "lora": REFUSE, "loss": REFUSE, "augment": REFUSE,  # what the steps taken were trained on
    "optim": APPLY,
    "trainer": FREE,  # how long, how often to validate/checkpoint/log, which hardware
    "trainer.max_steps": APPLY, "trainer.grad_clip": APPLY, "trainer.precision": APPLY,
    "processes": REFUSE,  # with data.batch_size, the batch each step averages over
}


def policy(key: str) -> str:
    """The policy of the longest listed prefix of a dotted key (model.goal_templates.goto.prompts: free)."""
    parts = key.split(".")
    return next((POLICY[p] for n in range(len(parts), 0, -1) if (p := ".".join(parts[:n])) in POLICY), REFUSE)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; a section that is None (lora: null) stays one key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def data_identity(manifest: dict, splits: tuple[str, ...] = ("train", "val")) -> str:
    """sha256 over the splits' shard names and hashes: what the steps were trained and validated on."""
    shards = {s: [(x["name"], x["sha256"]) for x in manifest["splits"][s]["shards"]] for s in splits}
    return sha256_text(canonical_json(shards))


def run_record(cfg, manifest: dict, world: int, mix_manifest: dict | None = None, parent_id: str | None = None
               ) -> dict:
    """The settings this run trains with, as the checkpoint stores them.

    Without data.mix_dir, data.mix_ratio means nothing and is left out, so checkpoints from before mixing
    existed (and runs without it) resume whatever its default; the None-valued derived keys compare equal to
    their absence likewise."""
    record = flatten(config_to_dict(cfg)) | {"data.content": data_identity(manifest), "processes": world,
                                             "parent_adapter": parent_id}
    if mix_manifest is None:
        record.pop("data.mix_ratio", None)
    else:
        record["data.mix_content"] = data_identity(mix_manifest, ("train",))
    return record


def _legacy_record(checkpoint: dict) -> dict:
    """A checkpoint from before the settings were stored: what its hyperparameters say."""
    hp = checkpoint.get("hyper_parameters", {})
    rec = flatten({k: hp[k] for k in ("model", "lora", "loss", "optim") if k in hp})
    return rec | ({"trainer.max_steps": hp["max_steps"]} if "max_steps" in hp else {})


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:12] + "..." + text[-8:]


def check_resume(checkpoint: dict, record: dict, cfg, verbose: bool = True) -> list[dict]:
    """Refuse a resume that changes what the steps so far computed; print what it applies.

    Returns the run's resume history with this resume added: [{"step", "changed": {key: [old, new]}}].
    """
    saved = checkpoint.get("vlmr", {})
    old = saved.get("config")
    legacy = old is None
    if legacy:
        old = _legacy_record(checkpoint)
    # compared as canonical JSON: a tuple and a list, 1 and 1.0 from YAML are the same setting
    keys = sorted(k for k in (set(old) if legacy else set(old) | set(record))
                  if canonical_json(old.get(k)) != canonical_json(record.get(k)))
    step = int(checkpoint.get("global_step", 0))
    name, last = cfg.name, f"{cfg.output_dir}/{cfg.name}/checkpoints/last.ckpt"
    refused = [k for k in keys if policy(k) == REFUSE]
    if refused:
        what = ", ".join(f"{k} ({_show(old.get(k))} -> {_show(record.get(k))})" for k in refused)
        raise VlmrError(f"run {name}: cannot resume from {last} (step {step}): it was trained with other settings "
                        f"for {what}. Put them back to resume, or start over with resume=false (or another name)")
    if 0 < cfg.trainer.max_steps < step:
        raise VlmrError(f"run {name}: {last} is at step {step}, past trainer.max_steps={cfg.trainer.max_steps}; raise "
                        "trainer.max_steps to continue, or start over with resume=false")
    applied = {k: [old.get(k), record.get(k)] for k in keys if policy(k) == APPLY}
    if applied and verbose:
        print(f"finetune {name}: resuming at step {step} with changed settings, applied from this step on: "
              + "; ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in applied.items()))
    return list(saved.get("resumes", [])) + [{"step": step, "changed": applied}]


def apply_optim(checkpoint: dict, oc, lr_factor) -> None:
    """Make the checkpoint's optimizer and scheduler state follow the optim section `oc`.

    Lightning restores the learning rate, betas and weight decay from the checkpoint's optimizer state and
    the scheduler's base lr from its own state; only the schedule's shape comes from the code. Rewriting
    them here (in on_load_checkpoint, before Lightning restores them) applies a changed optim section from
    the checkpoint's step, as if the schedule had always had the new values. Unchanged values are a no-op.
    Groups are configure_optimizers' [with weight decay, without].
    """
    for opt_state, sched in zip(checkpoint.get("optimizer_states", []), checkpoint.get("lr_schedulers", [])):
        groups = opt_state["param_groups"]
        lr_now = oc.lr * lr_factor(int(sched.get("last_epoch", checkpoint.get("global_step", 0))))
        for i, g in enumerate(groups):
            g.update(initial_lr=oc.lr, lr=lr_now, betas=tuple(oc.betas), weight_decay=oc.weight_decay if i == 0 else 0.0)
        sched["base_lrs"] = [oc.lr] * len(groups)
        sched["_last_lr"] = [lr_now] * len(groups)
