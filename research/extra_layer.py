"""Issue 35 probe: a tiny base with LLM layers added on top, so that something follows the base's last supervised heads.

In the shipped base the grounding head (layer 2) gives a question's object name its place in the room and the anchor
head (layer 3, the last) gives <Ori> the facing direction: the answer has no layer left to bring the two together
(research/probe_relations.py). This writes a copy of a base with --add more layers after its last one, each a
residual branch that starts as the identity (its attention output and MLP down projections zero, the rest drawn as
the LLM initialises them), the base's heads kept where they were (its negative layer indices made absolute), so
that `loc3r train --init OUT` starts from exactly the base's function:

    python research/extra_layer.py --base loc3r/assets/tiny_base --out DIR [--add 1]
    loc3r train --data DEMO_ROOMS --init DIR --recipe tiny_demo --relation-weight 1 ...   (relation heads: the last)

Findings: docs/LOG.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "vlm.model.language_model.layers"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--add", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.out.exists():
        raise SystemExit(f"{a.out}: exists")
    shutil.copytree(a.base, a.out)
    config = json.loads((a.base / "config.json").read_text())
    text = config["vlm"]["text_config"]
    n = text["num_hidden_layers"]
    text["num_hidden_layers"] = n + a.add
    if "layer_types" in text:
        text["layer_types"] = text["layer_types"] + text["layer_types"][-1:] * a.add
    tiny = config["tiny_base"]
    for key in ("grounding_layer", "anchor_layer", "copy_layer"):
        if tiny.get(key) is not None:
            tiny[key] = tiny[key] % n  # absolute: the heads stay in their layers
    tensors = load_file(str(a.base / "model.safetensors"))
    torch.manual_seed(a.seed)
    std = text.get("initializer_range", 0.02)
    for k in range(n, n + a.add):
        for name, value in list(tensors.items()):
            if not name.startswith(f"{PREFIX}.{n - 1}."):
                continue
            new = name.replace(f"{PREFIX}.{n - 1}.", f"{PREFIX}.{k}.")
            if name.endswith("layernorm.weight"):
                tensors[new] = torch.ones_like(value)
            elif name.endswith(("o_proj.weight", "down_proj.weight")) or name.endswith(".bias"):
                tensors[new] = torch.zeros_like(value)
            else:
                tensors[new] = torch.randn_like(value) * std
    save_file(tensors, str(a.out / "model.safetensors"), metadata={"format": "pt"})
    (a.out / "config.json").write_text(json.dumps(config, indent=2))
    heads = {k: tiny.get(k) for k in ("grounding_layer", "anchor_layer", "copy_layer")}
    print(f"{a.out}: {n} + {a.add} LLM layers; heads {heads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
