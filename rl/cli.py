"""`vlmr`: one command, a subcommand per stage.

    vlmr models                      # architectures, and which have weights offline
    vlmr score --model vlmr-tiny --goal "go to the red ball" frame.png
    vlmr collect configs/data/babyai_goto.yaml
    vlmr finetune configs/finetune/babyai_lora.yaml max_steps=200
    vlmr calibrate configs/calibrate/babyai.yaml
    vlmr evaluate ...   vlmr compare ...   vlmr pipeline ...   vlmr scaling ...   vlmr bench ...

Each stage is `module:function(argv)`, imported only when its command runs so
that `vlmr --help` stays fast. The CLI lives in `rl/` because `rl` is the top of
the dependency chain (rl -> calibrate -> finetune).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

COMMANDS = {
    "models": ("finetune.commands:models_main", "list architectures and which have weights offline"),
    "score": ("finetune.commands:score_main", "score image files or a shard for given goals"),
    "collect": ("rl.collect:main", "collect frame-caption data into webdataset shards"),
    "finetune": ("finetune.train:main", "adapt a CLIP reward model with LoRA (or train fully)"),
    "calibrate": ("calibrate.fit:main", "fit per-goal temperature and threshold; write reports"),
    "evaluate": ("calibrate.evaluate:main", "compare reward models on labelled shards"),
    "rl": ("rl.ppo:main", "train one PPO agent on a reward"),
    "compare": ("rl.compare:main", "A/B comparison of rewards with PPO agents"),
    "pipeline": ("rl.pipeline:main", "run the whole chain, skipping finished stages"),
    "scaling": ("rl.scaling:main", "reward quality against model size: one chain per size"),
    "bench": ("rl.bench:main", "throughput and cost benchmarks"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in COMMANDS.items()
            if importlib.util.find_spec(entry[0].split(":")[0]) is not None}


def usage() -> str:
    lines = ["usage: vlmr COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in available_commands().items()]
    lines += ["", "`vlmr COMMAND --help` shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    commands = available_commands()
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"vlmr: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = commands[name][0].split(":")
    from finetune.files import VlmrError

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except VlmrError as e:
        print(f"vlmr {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlmr {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
