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


def test_sigma_sweep_scales_the_loop_starts_threshold_with_the_uniform_kl():
    """The sweep's --loop-starts-when is the demo's, as a fraction of each sigma's yaw-blind KL: equal at the tiny
    preset's sigma; the KL is log(bins) - the target's entropy, here from explicit bin weights."""
    import math

    import numpy as np

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from sweep_orientation_sigma import loop_starts_threshold, uniform_kl
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from loc3r.model.config import Loc3RConfig

    def reference(sigma, bins=36):
        kls = []
        for yaw in np.linspace(-math.pi, math.pi, 73)[:-1]:
            centres = -math.pi + (np.arange(bins) + 0.5) * 2 * math.pi / bins
            d = (centres - yaw + math.pi) % (2 * math.pi) - math.pi
            p = np.exp(-d ** 2 / (2 * sigma ** 2))
            p /= p.sum()
            kls.append(math.log(bins) + (p * np.log(np.maximum(p, 1e-300))).sum())
        return float(np.mean(kls))

    for deg in (10, 30, 60):
        assert abs(uniform_kl(math.radians(deg), 36) - reference(math.radians(deg))) < 1e-4
    tiny = Loc3RConfig.tiny().orientation_sigma_rad
    assert abs(loop_starts_threshold(tiny, 0.6) - 0.6) < 1e-6
    assert loop_starts_threshold(math.radians(10), 0.6) > 0.6 > loop_starts_threshold(math.radians(60), 0.6)
