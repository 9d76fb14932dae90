"""Speed and disk size of `loc3r prepare-scannet` on a synthetic .sens scan.

    python benchmarks/bench_prepare_scannet.py [--frames 1000] [--size 480] [--unique 50] [--sample 32]

The scan: a `loc3r synth` room rendered at SIZE x SIZE px (colour JPEG, depth zlib uint16 mm, as ScanNet's) along a
camera path of UNIQUE frames, written as a .sens of FRAMES frames that cycle through those renders (rendering 1,000
frames at 480 px would take minutes on a small machine; the bytes per frame, what the export's speed depends on,
are those of real renders). Every 20th frame has a -inf pose (lost tracking). Rows, each timed in this process:

    prepare-scannet, every frame       JPEG bytes copied, depth decompressed and written as 16-bit PNG
    baseline: JPEG re-encoded          what SensReader's python export does: decode each JPEG, encode it again
    prepare-scannet --frames SAMPLE    a pass over the frame headers (images skipped), then the sampled frames
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from loc3r.data import sens
from loc3r.prepare_scannet import PrepareConfig, prepare
from loc3r.synth import formats
from loc3r.synth.writer import build_scene

SCENE_ID = "scene0000_00"


def write_scan(scans: Path, frames: int, size: int, unique: int) -> None:
    """DIR/scene0000_00/scene0000_00.sens (+ .txt and mesh) of `frames` frames cycling through `unique` renders."""
    data = build_scene(0, 0, unique, size)
    jpegs = [formats.jpeg_bytes(rgb) for rgb in data.rgb]
    depths = [sens.compress_depth(formats.depth_to_mm(d)) for d in data.depth_m]
    K4 = np.eye(4)
    K4[:3, :3] = data.K
    header = sens.SensHeader("bench", K4, np.eye(4), K4, np.eye(4), "jpeg", "zlib_ushort", size, size, size, size)
    folder = scans / SCENE_ID
    with sens.writing(folder / f"{SCENE_ID}.sens", header) as writer:
        for i in range(frames):
            pose = np.full((4, 4), -np.inf) if i % 20 == 19 else data.c2w_raw[i % unique]
            writer.add(pose, jpegs[i % unique], depths[i % unique], i * 33333, i * 33333)
    (folder / f"{SCENE_ID}.txt").write_text(formats.scene_meta_text(data.raw, data.axis_alignment, data.K, size, frames))
    formats.write_ply(folder / f"{SCENE_ID}_vh_clean_2.ply", *data.mesh)


def reencoding_export(sens_path: Path, out: Path) -> int:
    """The baseline: every frame exported with its JPEG decoded and encoded again; returns the frames written."""
    for sub in ("color", "depth", "pose"):
        (out / sub).mkdir(parents=True)
    n = 0
    with sens.SensReader(sens_path) as reader:
        for frame, color, depth in reader.frames():
            rgb = np.asarray(Image.open(io.BytesIO(color)).convert("RGB"))
            formats.write_color(out / "color" / f"{frame.index}.jpg", rgb)
            formats.write_depth_mm(out / "depth" / f"{frame.index}.png", reader.depth_mm(frame, depth))
            (out / "pose" / f"{frame.index}.txt").write_text(formats.matrix_text(frame.camera_to_world))
            n += 1
    return n


def disk_bytes(root: Path) -> int:
    """Bytes the files under root take on disk (allocated blocks, as du counts them)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--unique", type=int, default=50)
    parser.add_argument("--sample", type=int, default=32)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_scan(tmp / "raw", a.frames, a.size, a.unique)
        sens_path = tmp / "raw" / SCENE_ID / f"{SCENE_ID}.sens"
        print(f"scan: {a.frames} frames of {a.size}x{a.size} px ({a.unique} distinct renders), .sens "
              f"{sens_path.stat().st_size / 1e6:.1f} MB, written in {time.perf_counter() - t0:.1f} s\n")
        rows = []
        for name, options in [("prepare-scannet, every frame", {}),
                              (f"prepare-scannet --frames {a.sample}", {"frames": a.sample})]:
            out = tmp / name.replace(" ", "_")
            t0 = time.perf_counter()
            (result,) = prepare(PrepareConfig(tmp / "raw", out, **options))
            seconds = time.perf_counter() - t0
            assert result.status == "exported", result.error
            rows.append((name, result.frames, seconds, disk_bytes(out)))
        t0 = time.perf_counter()
        n = reencoding_export(sens_path, tmp / "baseline")
        rows.insert(1, ("baseline: JPEG re-encoded", n, time.perf_counter() - t0, disk_bytes(tmp / "baseline")))
    full_speed = rows[0][1] / rows[0][2]
    print("| export | frames written | seconds | frames/s | vs prepare-scannet | size on disk |")
    print("|---|---|---|---|---|---|")
    for name, frames, seconds, size in rows:
        speed = frames / seconds
        print(f"| {name} | {frames} | {seconds:.2f} | {speed:.0f} | {speed / full_speed:.2f}x | {size / 1e6:.1f} MB |")
    print(f"\n--frames {a.sample} takes {rows[2][3] / rows[0][3]:.3f} of the every-frame export's disk space and "
          f"{rows[2][2] / rows[0][2]:.3f} of its time")


if __name__ == "__main__":
    main()
