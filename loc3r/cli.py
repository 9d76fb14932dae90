"""`loc3r ...` entry points.

Each sub-command lives in the module that owns its work; that module exposes
`add_arguments(parser)` and `run(args) -> int | None`. Modules are imported only when their command runs,
so `loc3r --help` stays fast. A `Loc3rError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from loc3r.errors import Loc3rError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("loc3r.synth.writer", "generate synthetic rooms in the ScanNet / SQA3D formats"),
    "show": ("loc3r.show", "draw a scene's bird's-eye view (points, trajectory, objects, a situation)"),
    "convert-cut3r": ("loc3r.priors.cut3r_convert_cmd",
                      "convert an official CUT3R .pth into a safe config.json + model.safetensors"),
    "convert-llava-video": ("loc3r.model.convert_llava_video",
                            "convert the official LLaVA-Video release into the transformers layout --base loads"),
    "extract-priors": ("loc3r.priors.extract", "cache each scene's CUT3R camera tokens (optionally check CUT3R poses)"),
    "train": ("loc3r.train", "train Loc3R-VLM (one process, or torchrun -m loc3r.train for DDP / FSDP)"),
    "eval": ("loc3r.evaluate", "evaluate a checkpoint: localization and QA metrics, report, bird's-eye plots"),
    "infer": ("loc3r.infer", "answer a situated question about a video and locate the speaker"),
    "demo": ("loc3r.demo", "the main job on the embedded default: synthetic rooms, train tiny, evaluate, report"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Build only the parser of the command asked for: the other modules (torch, transformers) stay unimported.
    if argv and argv[0] in COMMANDS:
        module_name, help_text = COMMANDS[argv[0]]
        parser = argparse.ArgumentParser(prog=f"loc3r {argv[0]}", description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except Loc3rError as e:
            print(f"loc3r: error: {e}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="loc3r", description="Loc3R-VLM: localization and 3D reasoning from video.")
    parser.add_argument("command", choices=list(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    parser.parse_args(argv[:1])
    return 2


if __name__ == "__main__":
    sys.exit(main())
