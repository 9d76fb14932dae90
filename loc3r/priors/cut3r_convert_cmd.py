"""`loc3r convert-cut3r IN.pth OUT_DIR`: official CUT3R checkpoint -> our safe config.json + model.safetensors.

Nothing in IN.pth is executed (restricted unpickler, `ast`-parsed constructor string). Only the camera-token path
is kept, in float32; the dropped (never run) parts are printed and listed in OUT_DIR/config.json.
"""

from __future__ import annotations

import argparse

from loc3r.priors.cut3r_checkpoint import convert_cut3r


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="official .pth (e.g. cut3r_512_dpt_4_64.pth, cut3r_224_linear_4.pth)")
    parser.add_argument("out_dir", help="directory to write (an empty one or a previous conversion is replaced "
                                        "atomically; anything else only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir whatever it holds")


def run(args: argparse.Namespace) -> int:
    meta = convert_cut3r(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    c = meta["config"]
    print(f"wrote {args.out_dir}: CUT3R {c['head_type']} head, encoder {c['enc_embed_dim']}/{c['enc_depth']}, "
          f"decoder {c['dec_embed_dim']}/{c['dec_depth']}, {c['state_size']} state tokens, "
          f"camera-token dim {c['dec_embed_dim']}, preprocessing size {c['image_size']}")
    print(f"ignored (never run): {', '.join(meta['dropped_prefixes'])}")
    return 0
