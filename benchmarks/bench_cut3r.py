"""Speed of CUT3R camera-token extraction (encoder batched over the video, decoders recurrent), as a table.

Rows: the tiny fixture-A model on CPU; the released architecture (encoder 1024/24/16, decoders 768/12/12, 768 state
tokens) with random weights at 512x384 on CUDA in float16 / bfloat16 (with peak memory), skipped without a GPU;
and the released architecture on CPU at 224x224 with a few frames. The paper reports 1.2 s of CUT3R per 32-frame
query on an RTX 4090.

    python benchmarks/bench_cut3r.py [--frames 32] [--reps 3] [--no-cpu-large] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from loc3r.priors.cut3r import Cut3r, Cut3rConfig
from loc3r.priors.cut3r_checkpoint import convert_cut3r

FIXTURE = Path("/work/shared/fixtures/cut3r/A/checkpoint.pth")


def time_model(model: Cut3r, frames: int, hw: tuple[int, int], dtype: torch.dtype, reps: int, device: str):
    """Median seconds per video of `frames` frames, and peak CUDA memory (GiB, None on CPU)."""
    images = torch.rand(frames, 3, *hw, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        model(images[:2], dtype=dtype)  # warm-up (kernels, allocator)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(reps):
            sync()
            start = time.perf_counter()
            model(images, dtype=dtype)
            sync()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return statistics.median(times), peak


def row(name: str, device: str, dtype: torch.dtype, frames: int, hw, seconds: float, peak) -> str:
    peak_text = f"{peak:.1f}" if peak is not None else "-"
    return (f"| {name} | {device} | {str(dtype).removeprefix('torch.')} | {frames} | {hw[0]}x{hw[1]} "
            f"| {frames / seconds:.1f} | {seconds:.2f} | {peak_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-cpu-large", action="store_true", help="skip the released-size CPU row")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}\n")
    print("| model | device | dtype | frames | H x W | frames/s | s / video | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")

    with tempfile.TemporaryDirectory() as tmp:
        convert_cut3r(FIXTURE, Path(tmp) / "A")
        tiny = Cut3r.from_pretrained(Path(tmp) / "A")
    seconds, peak = time_model(tiny, args.frames, (64, 64), torch.float32, args.reps, "cpu")
    print(row("fixture A (tiny)", "cpu", torch.float32, args.frames, (64, 64), seconds, peak), flush=True)

    if torch.cuda.is_available():
        with torch.device("cuda"):
            released = Cut3r(Cut3rConfig()).eval().requires_grad_(False)  # random weights, released architecture
        for dtype in (torch.float16, torch.bfloat16):
            seconds, peak = time_model(released, args.frames, (384, 512), dtype, args.reps, "cuda")
            print(row("released size", "cuda", dtype, args.frames, (384, 512), seconds, peak), flush=True)
        del released
    else:
        print("| released size | cuda | float16 / bfloat16 | - | 384x512 | skipped: no GPU | | |", flush=True)
    if not args.no_cpu_large:
        released = Cut3r(Cut3rConfig()).eval().requires_grad_(False)
        frames = 4
        seconds, peak = time_model(released, frames, (224, 224), torch.float32, 1, "cpu")
        print(row("released size", "cpu", torch.float32, frames, (224, 224), seconds, peak))


if __name__ == "__main__":
    main()
