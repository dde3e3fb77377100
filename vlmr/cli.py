"""`vlmr`: one command, a subcommand per stage.

    vlmr models                                       # architectures, and which have weights offline
    vlmr score --arch vlmr-tiny --goal "go to the red ball" --goal "go to the blue key" frame.png
    vlmr configs                                      # the shipped configs, by name
    vlmr configs show babyai_demo                     # print one; `copy NAME [DEST]` copies it for editing
    vlmr collect --source shapes
    vlmr verify data/shapes                           # every shard and frame against its hash; per-shard verdict
    vlmr finetune babyai_lora trainer.max_steps=200
    vlmr calibrate babyai_goto
    vlmr pipeline babyai_demo                         # the whole chain (`make demo`)
    vlmr evaluate ...   vlmr rl ...   vlmr compare ...   vlmr refine ...   vlmr scaling ...   vlmr bench ...

Each command is `module:function(argv)`, imported only when it runs, so `vlmr --help` and `vlmr configs`
need no torch. A command whose optional dependencies are missing says which extra installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path

COMMANDS = {  # command -> module:function(argv)
    "models": "vlmr.commands:models_main",
    "score": "vlmr.commands:score_main",
    "verify": "vlmr.core.verify:verify_main",
    "configs": "vlmr.cli:configs_main",
    "collect": "vlmr.rl.collect.collect:main",
    "finetune": "vlmr.finetune.train:main",
    "calibrate": "vlmr.calibrate.fit:main",
    "evaluate": "vlmr.rl.collect.rerender:main",  # --render-size draws frames with the envs
    "rl": "vlmr.rl.agent.ppo:main",
    "compare": "vlmr.rl.experiments.compare:main",
    "refine": "vlmr.rl.experiments.refine:main",
    "pipeline": "vlmr.rl.experiments.pipeline:main",
    "scaling": "vlmr.rl.experiments.scaling:main",
    "bench": "vlmr.bench.run:main",
}
HELP = {
    "models": "list architectures and which have weights offline",
    "score": "score image files or a shard for given goals",
    "verify": "check a dataset's shards and frames against their hashes",
    "configs": "list, show or copy the shipped configs",
    "collect": "collect frame-caption data into webdataset shards",
    "finetune": "adapt a CLIP reward model with LoRA (or train fully)",
    "calibrate": "fit per-goal temperature and threshold; write reports",
    "evaluate": "compare reward models on labelled shards",
    "rl": "train one PPO agent on a reward",
    "compare": "A/B comparison of rewards with PPO agents",
    "refine": "refine a reward model on its trained agents' rollouts",
    "pipeline": "run the whole chain, skipping finished stages",
    "scaling": "reward quality against model size: one chain per size",
    "bench": "throughput and cost benchmarks",
}

# import name of an optional dependency -> the extra that installs it
EXTRAS = {"pytorch_lightning": "train", "lightning": "train", "lightning_fabric": "train", "torchmetrics": "train",
          "webdataset": "train", "wandb": "train", "matplotlib": "train", "minigrid": "envs", "crafter": "envs"}


def usage() -> str:
    lines = ["usage: vlmr COMMAND [args]", "", "commands:"]
    lines += [f"  {name:<10} {HELP[name]}" for name in COMMANDS]
    lines += ["", "`vlmr COMMAND --help` shows a command's arguments."]
    return "\n".join(lines)


def missing_extra_message(command: str, err: ModuleNotFoundError) -> str | None:
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return (f"`vlmr {command}` needs the package {top!r}, which is not installed: "
            f"pip install 'vlmr[{EXTRAS[top]}]' (or 'vlmr[all]')")


def configs_main(argv: list[str]) -> int:
    from vlmr.core.config import resolve_config, shipped_config_dir, shipped_configs
    from vlmr.core.files import atomic_write_bytes

    parser = argparse.ArgumentParser(prog="vlmr configs", description="The configs shipped with vlmr.")
    parser.add_argument("action", nargs="?", choices=("list", "show", "copy"), default="list")
    parser.add_argument("name", nargs="?", help="a config's name (babyai_demo, data/shapes) for show and copy")
    parser.add_argument("dest", nargs="?", help="copy: file or folder to copy to (default: ./NAME.yaml)")
    args = parser.parse_args(argv)
    if args.action == "list":
        print(f"shipped configs ({shipped_config_dir()}); give a name to any stage, e.g. `vlmr pipeline babyai_demo`")
        for name, path in shipped_configs().items():
            first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
            print(f"  {name:<28} {first[:80]}")
        return 0
    if not args.name:
        parser.error(f"`vlmr configs {args.action}` needs a NAME")
    path = resolve_config(args.name)
    if args.action == "show":
        print(path.read_text(), end="")
        return 0
    dest = Path(args.dest or path.name)
    if dest.is_dir():
        dest = dest / path.name
    if dest.exists():
        from vlmr.core.errors import VlmrError

        raise VlmrError(f"{dest} exists; give another destination or delete it first")
    atomic_write_bytes(dest, path.read_bytes())
    note = ("; the configs it names by a relative path (../data/shapes.yaml) now resolve next to the copy, or "
            "else to the shipped ones") if path.parent.name == "pipeline" else ""
    print(f"copied {path} -> {dest}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # the reader closed the pipe (`vlmr configs | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


@contextlib.contextmanager
def one_line_data_warnings():
    """Warnings about data (quality, integrity) print as one 'warning: ...' line, from every stage; others as usual."""
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            from vlmr.core.integrity import LegacyDatasetWarning
            from vlmr.core.quality import QualityWarning

            if issubclass(category, (QualityWarning, LegacyDatasetWarning)):
                print(f"warning: {message}", file=file or sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        from vlmr import __version__

        print(f"vlmr {__version__}")
        return 0
    if name not in COMMANDS:
        print(f"vlmr: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name].split(":")
    from vlmr.core.errors import VlmrError

    try:
        with one_line_data_warnings():
            func = getattr(importlib.import_module(module_name), func_name)
            return int(func(rest) or 0)
    except VlmrError as e:
        print(f"vlmr {name}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        message = missing_extra_message(name, e)
        if message is None:
            raise
        print(f"vlmr {name}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vlmr {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(f"vlmr {name}: error: {message}", file=sys.stderr)
        return 2


def os_error_message(e: OSError) -> str | None:
    """One line for an OSError that names a file or is about the disk (read-only, full, permissions).

    Writes that vlmr makes raise WriteError already; this catches the rest (a library writing its own
    files, a folder deleted under a running stage). Anything else keeps its traceback: it is a bug.
    """
    import errno

    disk = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
    if e.filename is None and e.errno not in disk:
        return None
    where = f": {e.filename}" if e.filename is not None else ""
    return f"{e.strerror or e}{where}"


if __name__ == "__main__":
    sys.exit(main())
