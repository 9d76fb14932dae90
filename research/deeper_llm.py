"""Issue 35 probe: does a deeper tiny LLM answer from the located viewpoint? The shipped base's two pretraining stages
and the demo's recipe, with an LLM of --layers layers instead of 4, scored on the held-out rooms. The base's heads
keep their layers counted from the end (grounding -2, anchor -1, copy -1: with 6 layers, layers 4 and 5, so the extra
layers come *before* them; the 2026-12-07 run did this) unless --grounding-layer / --anchor-layer place them.

    python research/deeper_llm.py --data DEMO_ROOMS --test TEST_ROOMS --out DIR [--layers 6]
        [--grounding-layer 2 --anchor-layer 3]
    python research/deeper_llm.py cli ARGS...     (one loc3r command with the deeper preset; used by the above)

Stage 1 runs as the shipped base's (3,000-step schedule) and is stopped once its step-1000 checkpoint is written,
as the shipped base was taken mid-schedule (docs/tiny_base.md). Findings: docs/LOG.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

LAYERS_ENV = "LOC3R_PROBE_LLM_LAYERS"


def deeper_preset(layers: int) -> None:
    """Make Loc3RConfig.tiny build an LLM of `layers` layers in this process."""
    from loc3r.model.config import Loc3RConfig

    plain = Loc3RConfig.tiny.__func__

    def tiny(cls, **overrides):
        config = plain(cls, **overrides)
        text = {**config.vlm["text_config"], "num_hidden_layers": layers}
        if "layer_types" in text:
            text["layer_types"] = [text["layer_types"][0]] * layers
        return dataclasses.replace(config, vlm={**config.vlm, "text_config": text})

    Loc3RConfig.tiny = classmethod(tiny)


def command(args: list[str], layers: int, log: Path, stop_at: Path | None = None) -> None:
    """Run one loc3r command with the deeper preset in a subprocess; with stop_at, end it once that file exists."""
    env = {**os.environ, LAYERS_ENV: str(layers)}
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, __file__, "cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if stop_at is not None and stop_at.exists():
                time.sleep(20)  # the checkpoint directory is renamed into place whole; let latest.json follow
                proc.terminate()
                proc.wait()
                return
            time.sleep(5)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}): see {log}")


def main() -> int:
    if sys.argv[1:2] == ["cli"]:
        deeper_preset(int(os.environ[LAYERS_ENV]))
        from loc3r.cli import main as cli

        return cli(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the demo's training rooms")
    p.add_argument("--test", type=Path, required=True, help="the held-out rooms")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grounding-layer", type=int, help="pretrain-base --grounding-layer (default: the base's -2)")
    p.add_argument("--anchor-layer", type=int, help="pretrain-base --anchor-layer (default: the base's -1)")
    a = p.parse_args()
    heads = [f for name in ("grounding_layer", "anchor_layer") if getattr(a, name) is not None
             for f in (f"--{name.replace('_', '-')}", str(getattr(a, name)))]
    a.out.mkdir(parents=True, exist_ok=True)
    log = a.out / "log.txt"
    base0, base, run = a.out / "base0", a.out / "base", a.out / "run"
    stage1 = base0 / "checkpoints" / "step_0001000"
    if not stage1.exists():
        command(["pretrain-base", "--data", str(a.data), "--out", str(base0), "--steps", "3000", "--save-every", "250",
                 "--seed", "0", "--overwrite", *heads], a.layers, log, stop_at=stage1)
    stage2 = base / "checkpoints" / "step_0000400"
    if not stage2.exists():
        command(["pretrain-base", "--data", str(a.data), "--out", str(base), "--init", str(stage1), "--copy-questions",
                 "--embed-scale", "32", "--steps", "800", "--save-every", "400", "--seed", "0", "--overwrite"],
                a.layers, log, stop_at=stage2)
    command(["train", "--data", str(a.data), "--out", str(run), "--init", str(stage2), "--recipe", "tiny_demo",
             "--seed", str(a.seed), "--save-every", "900", "--log-every", "100", "--overwrite"], a.layers, log)
    command(["eval", "--checkpoint", str(run), "--data", str(a.test), "--out", str(a.out / "eval"), "--overwrite"],
            a.layers, log)
    print(f"report: {a.out / 'eval' / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
