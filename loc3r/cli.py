"""`loc3r ...` entry points.

Each sub-command lives in the module that owns its work; that module exposes
`add_arguments(parser)` and `run(args) -> int | None`. Modules are imported only when their command runs,
so `loc3r --help` stays fast. A `Loc3rError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from loc3r.command import run_command

# command -> one-line help
COMMANDS: dict[str, str] = {
    "synth": "generate synthetic rooms in the ScanNet / SQA3D formats",
    "show": "draw a scene's bird's-eye view (points, trajectory, objects, a situation)",
    "convert-cut3r": "convert an official CUT3R .pth into a safe config.json + model.safetensors",
    "convert-llava-video": "convert the official LLaVA-Video release into the transformers layout --base loads",
    "prepare-scannet": "export ScanNet's .sens files into the posed-images layout loc3r reads",
    "extract-priors": "cache each scene's CUT3R camera tokens (optionally check CUT3R poses)",
    "pretrain-base": "pretrain the tiny preset's base on synthetic rooms: seeing, naming and finding objects, no poses",
    "check-data": "check a training mixture in seconds: questions, missing scenes and videos, poses, tokens, steps",
    "train": "train Loc3R-VLM (one process, or torchrun -m loc3r.train for DDP / FSDP)",
    "eval": "evaluate a checkpoint: localization and QA metrics, report, bird's-eye plots",
    "infer": "answer a situated question about a video and locate the speaker",
    "demo": "the main job on the embedded default: synthetic rooms, train tiny, evaluate, report",
}


def command_module(name: str) -> ModuleType:
    """The module of a command, imported when that command runs (torch and transformers load only then)."""
    if name == "synth":
        from loc3r.synth import writer as module
    elif name == "show":
        from loc3r import show as module
    elif name == "convert-cut3r":
        from loc3r.priors import cut3r_convert_cmd as module
    elif name == "convert-llava-video":
        from loc3r.model import convert_llava_video as module
    elif name == "prepare-scannet":
        from loc3r import prepare_scannet as module
    elif name == "extract-priors":
        from loc3r import extract_priors as module
    elif name == "pretrain-base":
        from loc3r.train import pretrain_base as module
    elif name == "check-data":
        from loc3r.train import check_data as module
    elif name == "train":
        from loc3r.train import loop as module
    elif name == "eval":
        from loc3r.evaluate import evaluation as module
    elif name == "infer":
        from loc3r import infer as module
    elif name == "demo":
        from loc3r import demo as module
    else:
        raise KeyError(name)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Build only the parser of the command asked for: the other modules (torch, transformers) stay unimported.
    if argv and argv[0] in COMMANDS:
        return run_command(command_module(argv[0]), argv[0], argv[1:], COMMANDS[argv[0]])
    parser = argparse.ArgumentParser(
        prog="loc3r", description="Loc3R-VLM: localization and 3D reasoning from video.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<21}{v}" for k, v in COMMANDS.items())
        + "\n\n`loc3r COMMAND --help` lists a command's flags with their defaults.")
    parser.add_argument("--version", action="version", version=f"loc3r {version()}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    parser.parse_args(argv[:1])
    return 2


def version() -> str:
    """The installed package's version (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("loc3r")
    except PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
