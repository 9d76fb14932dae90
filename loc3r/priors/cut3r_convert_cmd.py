"""`loc3r convert-cut3r IN.pth OUT_DIR`: official CUT3R checkpoint -> our safe config.json + model.safetensors.

Nothing in IN.pth is executed (restricted unpickler, `ast`-parsed constructor string). Only the camera-token path
is kept, in float32; the dropped (never run) parts are printed and listed in OUT_DIR/config.json.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.priors.cut3r_checkpoint import convert_cut3r


@dataclass
class ConvertCut3rConfig:
    """The arguments of `loc3r convert-cut3r` (generated from these fields and their comments)."""

    checkpoint: Path  # official .pth (e.g. cut3r_512_dpt_4_64.pth, cut3r_224_linear_4.pth)
    out_dir: Path  # directory to write (an empty one or a previous conversion is replaced; else only --overwrite)
    overwrite: bool = False  # replace out_dir whatever it holds

    POSITIONAL: ClassVar[tuple] = ("checkpoint", "out_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ConvertCut3rConfig)


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(ConvertCut3rConfig, args)
    meta = convert_cut3r(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    c = meta["config"]
    print(f"wrote {args.out_dir}: CUT3R {c['head_type']} head, encoder {c['enc_embed_dim']}/{c['enc_depth']}, "
          f"decoder {c['dec_embed_dim']}/{c['dec_depth']}, {c['state_size']} state tokens, "
          f"camera-token dim {c['dec_embed_dim']}, preprocessing size {c['image_size']}")
    print(f"ignored (never run): {', '.join(meta['dropped_prefixes'])}")
    return 0
