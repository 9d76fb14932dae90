"""ScanNet's `.sens` files (format version 4 of ScanNet's SensReader), read and written one frame at a time.

The layout, little-endian, as SensReader/c++/src/sensorData.h of github.com/ScanNet/ScanNet writes it:

    header  version uint32 (= 4); sensor name: length uint64, then that many bytes;
            intrinsic_color, extrinsic_color, intrinsic_depth, extrinsic_depth: 4x4 float32 each, row-major;
            colour compression int32 (-1 unknown, 0 raw, 1 png, 2 jpeg);
            depth compression int32 (-1 unknown, 0 raw_ushort, 1 zlib_ushort, 2 occi_ushort);
            colour width, height, depth width, height: uint32; depth shift float32 (1000: depth in millimetres);
            frame count uint64
    frame   camera_to_world 4x4 float32 (-inf where tracking was lost); colour and depth timestamps uint64;
            colour and depth byte counts uint64; the colour bytes; the depth bytes
    IMU     count uint64, then 128 bytes a record (five float64 triples and a uint64 timestamp). The C++ writer
            always ends a file with this section (count 0 for ScanNet's scans); the Python reader never reads it.

`SensReader` parses the header, then walks the 96-byte frame headers, seeking past the image bytes, so a pass over
the poses of a 5,000-frame scan reads ~0.5 MB, and at most one frame's bytes are in memory at a time. Every
inconsistency (another version, an unknown compression type, a file that ends inside the header or a frame, byte
counts that run past the end of the file, bytes after the frames that are not the IMU section) is a one-line
Loc3rError naming the file. `SensWriter` writes the same layout (what `loc3r synth --sens` and the tests use).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from loc3r.errors import Loc3rError
from loc3r.io import atomic_path

VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
DECODED_DEPTH = ("raw_ushort", "zlib_ushort")  # occi_ushort needs the proprietary uplink codec

_MATRICES = struct.Struct("<64f")  # intrinsic / extrinsic of colour, then of depth
_CAMERA = struct.Struct("<2i4IfQ")  # compressions, colour / depth width and height, depth shift, frame count
_FRAME = struct.Struct("<16f4Q")  # camera_to_world, timestamps, byte counts: 96 bytes
_COUNT = struct.Struct("<Q")
IMU_RECORD_BYTES = 5 * 3 * 8 + 8
MAX_NAME_BYTES = 1 << 16  # a longer sensor name is a corrupt length field, not a name


@dataclass
class SensHeader:
    """What a .sens file says about its cameras (matrices [4, 4] float32)."""

    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str  # a value of COLOR_COMPRESSION
    depth_compression: str  # a value of DEPTH_COMPRESSION
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float = 1000.0  # stored depth units per metre
    num_frames: int = 0  # frames in the file (the writer counts them itself)


@dataclass
class FrameHeader:
    """One frame's fixed-size record and where its image bytes lie."""

    index: int  # position in the file, 0-based: the exported file names
    camera_to_world: np.ndarray  # [4, 4] float32, non-finite where tracking was lost
    timestamp_color: int
    timestamp_depth: int
    color_offset: int  # byte offset of the colour bytes; the depth bytes follow them
    color_bytes: int
    depth_bytes: int

    @property
    def end(self) -> int:
        """Byte offset just after this frame."""
        return self.color_offset + self.color_bytes + self.depth_bytes


class SensReader:
    """An open .sens file: `header`, then `frame_headers()` (seeking past images) and `frames()` (reading them).
    Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file: BinaryIO = open(self.path, "rb")
        except FileNotFoundError:
            raise Loc3rError(f"{self.path}: file not found") from None
        except OSError as e:
            raise Loc3rError(f"{self.path}: cannot read ({(e.strerror or str(e)).lower()})") from None
        self.size = os.fstat(self._file.fileno()).st_size
        try:
            self.header, self.first_frame_offset = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> SensReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _fail(self, problem: str) -> Loc3rError:
        return Loc3rError(f"{self.path}: {problem}")

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            raise self._fail(f"truncated: the file ends inside {what} (ScanNet .sens, {self.size} bytes)")
        return data

    def _read_header(self) -> tuple[SensHeader, int]:
        (version,) = struct.unpack("<I", self._read_exact(4, "the header"))
        if version != VERSION:
            raise self._fail(f"not a ScanNet .sens file of version {VERSION} (its first 4 bytes read {version})")
        (name_len,) = _COUNT.unpack(self._read_exact(_COUNT.size, "the header"))
        if name_len > MAX_NAME_BYTES:
            raise self._fail(f"corrupt header: a sensor name of {name_len} bytes")
        name = self._read_exact(name_len, "the header").decode("utf-8", "replace")
        m = np.array(_MATRICES.unpack(self._read_exact(_MATRICES.size, "the header")), np.float32).reshape(4, 4, 4)
        color_type, depth_type, cw, ch, dw, dh, shift, n_frames = _CAMERA.unpack(
            self._read_exact(_CAMERA.size, "the header"))
        if color_type not in COLOR_COMPRESSION or color_type == -1:
            raise self._fail(f"unknown colour compression type {color_type} (known: 0 raw, 1 png, 2 jpeg)")
        if depth_type not in DEPTH_COMPRESSION or depth_type == -1:
            raise self._fail(f"unknown depth compression type {depth_type} "
                             "(known: 0 raw_ushort, 1 zlib_ushort, 2 occi_ushort)")
        first = self._file.tell()
        if n_frames * _FRAME.size > self.size - first:
            raise self._fail(f"sizes do not add up: the header says {n_frames} frames, more than the "
                             f"{self.size - first} bytes after it can hold (truncated or corrupt)")
        header = SensHeader(name, m[0], m[1], m[2], m[3], COLOR_COMPRESSION[color_type], DEPTH_COMPRESSION[depth_type],
                            cw, ch, dw, dh, float(shift), n_frames)
        return header, first

    def frame_headers(self) -> Iterator[FrameHeader]:
        """Every frame's header in file order, seeking past the image bytes; then checks that what follows the last
        frame is the IMU section. The file position is set here for each frame, so the caller may read in between."""
        offset = self.first_frame_offset
        for index in range(self.header.num_frames):
            self._file.seek(offset)
            values = _FRAME.unpack(self._read_exact(_FRAME.size, f"frame {index}'s header"))
            c2w = np.array(values[:16], np.float32).reshape(4, 4)
            frame = FrameHeader(index, c2w, values[16], values[17], offset + _FRAME.size, values[18], values[19])
            if frame.end > self.size:
                raise self._fail(f"sizes do not add up: frame {index}'s colour and depth bytes ({frame.color_bytes} + "
                                 f"{frame.depth_bytes}) run past the end of the file (truncated or corrupt)")
            yield frame
            offset = frame.end
        self._check_tail(offset)

    def _check_tail(self, offset: int) -> None:
        """What follows the frames: nothing (files of writers that follow the Python reader) or the IMU section."""
        left = self.size - offset
        if left == 0:
            return
        self._file.seek(offset)
        count = _COUNT.unpack(self._file.read(_COUNT.size))[0] if left >= _COUNT.size else None
        if count is None or left != _COUNT.size + count * IMU_RECORD_BYTES:
            raise self._fail(f"sizes do not add up: the {left} bytes after frame {self.header.num_frames - 1} are not "
                             "the IMU section a .sens file ends with (truncated or corrupt)")

    def read_images(self, frame: FrameHeader) -> tuple[bytes, bytes]:
        """The frame's colour and depth bytes, as stored (compressed)."""
        self._file.seek(frame.color_offset)
        color = self._read_exact(frame.color_bytes, f"frame {frame.index}'s colour bytes")
        depth = self._read_exact(frame.depth_bytes, f"frame {frame.index}'s depth bytes")
        return color, depth

    def frames(self, indices: Iterable[int] | None = None) -> Iterator[tuple[FrameHeader, bytes, bytes]]:
        """(header, colour bytes, depth bytes) of the frames in `indices` (all when None), in file order; the others'
        images are skipped unread. The whole file's sizes are checked, also past the last frame asked for."""
        wanted = None if indices is None else {int(i) for i in indices}
        for frame in self.frame_headers():
            if wanted is None or frame.index in wanted:
                yield (frame, *self.read_images(frame))

    def depth_mm(self, frame: FrameHeader, depth: bytes) -> np.ndarray:
        """[H, W] uint16 depth of a frame's stored bytes (units of 1 / depth_shift metres)."""
        h = self.header
        if h.depth_compression not in DECODED_DEPTH:
            raise self._fail(f"depth compression {h.depth_compression} is not supported "
                             f"(only {' and '.join(DECODED_DEPTH)})")
        if h.depth_compression == "zlib_ushort":
            try:
                depth = zlib.decompress(depth)
            except zlib.error as e:
                raise self._fail(f"frame {frame.index}: corrupt zlib depth data ({e})") from None
        if len(depth) != h.depth_width * h.depth_height * 2:
            raise self._fail(f"frame {frame.index}: depth has {len(depth)} bytes, expected {h.depth_width} x "
                             f"{h.depth_height} x 2")
        return np.frombuffer(depth, "<u2").reshape(h.depth_height, h.depth_width).astype(np.uint16)


def compress_depth(depth_mm: np.ndarray, level: int = 1) -> bytes:
    """[H, W] uint16 depth -> the bytes of a zlib_ushort frame."""
    return zlib.compress(np.ascontiguousarray(depth_mm, "<u2").tobytes(), level)


class SensWriter:
    """Writes frames to an open binary file after a header; `finish()` writes the (empty) IMU section and the frame
    count. Use `writing(path, header)`, which makes the file appear whole or not at all."""

    def __init__(self, file: BinaryIO, header: SensHeader):
        colors = {v: k for k, v in COLOR_COMPRESSION.items()}
        depths = {v: k for k, v in DEPTH_COMPRESSION.items()}
        if header.color_compression not in colors or header.depth_compression not in depths:
            raise ValueError(f"unknown compression {header.color_compression!r} / {header.depth_compression!r}")
        name = header.sensor_name.encode("utf-8")
        matrices = np.stack([header.intrinsic_color, header.extrinsic_color, header.intrinsic_depth,
                             header.extrinsic_depth]).astype(np.float32).reshape(-1)
        self._file, self.num_frames = file, 0
        file.write(struct.pack("<I", VERSION) + _COUNT.pack(len(name)) + name + _MATRICES.pack(*matrices))
        self._count_offset = file.tell() + _CAMERA.size - _COUNT.size
        file.write(_CAMERA.pack(colors[header.color_compression], depths[header.depth_compression],
                                header.color_width, header.color_height, header.depth_width, header.depth_height,
                                header.depth_shift, 0))

    def add(self, camera_to_world: np.ndarray, color: bytes, depth: bytes, timestamp_color: int = 0,
            timestamp_depth: int = 0) -> None:
        """Append a frame: its 4x4 pose and its colour and depth bytes as stored (compressed)."""
        c2w = np.asarray(camera_to_world, np.float32).reshape(-1)
        self._file.write(_FRAME.pack(*c2w, timestamp_color, timestamp_depth, len(color), len(depth)))
        self._file.write(color)
        self._file.write(depth)
        self.num_frames += 1

    def finish(self) -> None:
        self._file.write(_COUNT.pack(0))  # no IMU records
        self._file.seek(self._count_offset)
        self._file.write(_COUNT.pack(self.num_frames))
        self._file.seek(0, os.SEEK_END)


@contextlib.contextmanager
def writing(path: str | os.PathLike, header: SensHeader) -> Iterator[SensWriter]:
    """A SensWriter into `path`, written to a temporary beside it and renamed when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = SensWriter(f, header)
        yield writer
        writer.finish()
