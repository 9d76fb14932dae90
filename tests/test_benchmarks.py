"""The GPU benchmark's code path, run on the CPU with scaled-down shapes (what `--smoke` is for)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_gpu_benchmark_smoke():
    out = run("benchmarks/bench_7b_gpu.py", "--smoke")
    for row in ("query (4 frames", "cut3r", "vision", "prefill", "decode (16 tokens)", "LoRA step (rank 64"):
        assert row in out, out


def test_gpu_benchmark_fsdp_step_smoke():
    out = run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "benchmarks/bench_7b_gpu.py",
              "--smoke", "--fsdp-step")
    assert "full fine-tuning step, FSDP2, world size 1" in out, out


def test_yaw_blind_kl_is_the_log_bins_minus_the_targets_entropy():
    """losses.yaw_blind_kl (the scale of tiny_demo's --loop-starts-when, a fraction of it per sigma) against the KL to
    the uniform distribution from explicit bin weights; the recipe's threshold is that fraction at the tiny sigma."""
    import math

    import numpy as np

    from loc3r.model.config import Loc3RConfig
    from loc3r.model.losses import yaw_blind_kl
    from loc3r.train.recipes import LOOP_JOIN_FRACTION, TINY_DEMO, loop_join_threshold

    def reference(sigma, bins=36):
        kls = []
        for yaw in np.radians(np.arange(360)) - math.pi:
            centres = -math.pi + (np.arange(bins) + 0.5) * 2 * math.pi / bins
            d = (centres - yaw + math.pi) % (2 * math.pi) - math.pi
            p = np.exp(-d ** 2 / (2 * sigma ** 2))
            p /= p.sum()
            kls.append(math.log(bins) + (p * np.log(p)).sum())
        return float(np.mean(kls))

    for deg in (10, 30, 60):
        assert abs(yaw_blind_kl(math.radians(deg), 36) - reference(math.radians(deg))) < 1e-4
    # a sigma far below a bin: all mass on the nearest bin centre (log bins), split in two at the yaws halfway
    # between two centres (1 in 10 of the whole-degree yaws for 10-degree bins)
    assert abs(yaw_blind_kl(1e-3, 36) - (math.log(36) - math.log(2) / 10)) < 1e-4
    tiny = Loc3RConfig.tiny().orientation_sigma_rad
    assert abs(TINY_DEMO.settings["loop_starts_when"] - LOOP_JOIN_FRACTION * reference(tiny)) < 1e-4
    assert TINY_DEMO.settings["loop_starts_when"] == loop_join_threshold(tiny)  # what the sigma sweep gives each sigma
