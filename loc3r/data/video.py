"""A user's own video: decoded with PyAV or read from a folder of frames, T frames sampled uniformly.

Optional camera poses (phone AR / SLAM, 4x4 camera-to-world txt files named like the frames, +z up world)
feed the `poses` prior; without them the poses prior sees identity poses flagged as unknown.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from loc3r.data.scannet import read_image, read_matrix_txt, uniform_indices
from loc3r.errors import Loc3rError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@contextmanager
def _open_video(path: Path) -> Iterator:
    """PyAV's container of a video file with a video stream; its errors as one line naming the file."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Loc3rError(f"{path}: no video stream")
            yield container
    except Loc3rError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise Loc3rError(f"{path}: unreadable video ({e})") from None


def _decode(path: Path, keep: set[int] | None) -> tuple[dict[int, np.ndarray], int]:
    """Decode the first video stream, keeping the frames whose index is in `keep` (None: none); count all."""
    kept, n = {}, 0
    with _open_video(path) as container:
        for n, frame in enumerate(container.decode(video=0), 1):
            if keep is not None and n - 1 in keep:
                kept[n - 1] = frame.to_ndarray(format="rgb24")
    return kept, n


def video_frame_count(path: Path) -> int:
    """Frames in the first video stream: the container's count when it has one, else counted by decoding."""
    with _open_video(path) as container:
        declared = container.streams.video[0].frames
    return declared if declared > 0 else _decode(path, None)[1]


def video_frame_rate(path: str | Path) -> float | None:
    """Average frame rate of the first video stream (frames / s), None when the container does not say."""
    with _open_video(Path(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def read_video(path: str | Path, num_frames: int) -> tuple[np.ndarray, int]:
    """[T, H, W, 3] uint8 frames sampled uniformly from a video file, and the video's number of frames.
    Only the T sampled frames are kept in memory (a long video is decoded, not stored)."""
    path = Path(path)
    if path.is_dir():
        raise Loc3rError(f"{path}: a directory, not a video file (a folder of frames: infer --frames DIR)")
    if not path.is_file():
        raise Loc3rError(f"{path}: file not found")
    total = video_frame_count(path)
    kept, decoded = _decode(path, set(uniform_indices(max(total, 1), num_frames).tolist()))
    if decoded != total:  # the container's count was wrong: sample over what really decodes
        total = decoded
        kept, _ = _decode(path, set(uniform_indices(max(total, 1), num_frames).tolist()))
    if total == 0:
        raise Loc3rError(f"{path}: the video has no frames")
    return np.stack([kept[i] for i in uniform_indices(total, num_frames)]), total


def frame_files(directory: str | Path) -> list[Path]:
    """Image files of a folder, sorted numerically when named by numbers, else by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise Loc3rError(f"{directory}: not a directory of frames")
    files = [p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise Loc3rError(f"{directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(files, key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.name))


def read_frame_dir(directory: str | Path, num_frames: int) -> tuple[np.ndarray, list[Path]]:
    """[T, H, W, 3] uint8 frames sampled uniformly from a folder of images, and the files used."""
    files = frame_files(directory)
    chosen = [files[i] for i in uniform_indices(len(files), num_frames)]
    frames = [np.asarray(read_image(p).convert("RGB")) for p in chosen]
    if len({f.shape for f in frames}) != 1:
        raise Loc3rError(f"{directory}: frames have different sizes")
    return np.stack(frames), chosen


def read_pose_dir(directory: str | Path, frames: list[Path]) -> np.ndarray:
    """[T, 4, 4] camera-to-world poses `<stem>.txt` for the given frame files."""
    directory = Path(directory)
    return np.stack([read_matrix_txt(directory / f"{p.stem}.txt") for p in frames])


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """[T, size, size, 3] uint8, each frame resized (no crop) as the video processor of LLaVA-Video does."""
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])
