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
