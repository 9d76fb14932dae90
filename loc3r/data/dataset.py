"""Samples of the benchmarks, everything in the video's BEV frame:
- SituatedQADataset: questions on ScanNet scans (SQA3D, ScanQA, MSQA records) joined with their scene's cache;
- VideoQADataset: questions on plain videos without poses or depth (VSI-Bench), frames read with PyAV."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from loc3r import geometry
from loc3r.constants import NO_SITUATION
from loc3r.data.benchmarks import QARecord, vsibench_video
from loc3r.data.cache import SceneCache, scene_cache
from loc3r.data.sample import Sample
from loc3r.data.scannet import ScanNetScene, uniform_indices
from loc3r.data.sqa3d import SQA3DRecord, read_sqa3d
from loc3r.errors import Loc3rError


def is_situated(situation: str) -> bool:
    """False for empty situations and the pseudo-situation of non-situated questions."""
    return situation.strip().lower().rstrip(".") not in ("", NO_SITUATION.lower().rstrip("."))


def record_situated(record) -> bool:
    """Whether a question record is situated: a QARecord says so (ScanQA, MSQA, VSI-Bench), an SQA3D record by its
    situation text."""
    return record.has_situation if isinstance(record, QARecord) else is_situated(record.situation)


DEFAULT_MAX_CACHE_BYTES = 2 << 30  # scene caches kept in memory per dataset (384 px x 32 frames: ~14 MB a scene)


def video_key(key: str, loop_start: tuple[int, int]) -> str:
    """What names the video of a looped scan begun at loop_start (s, K): the scan's own key for s = 0."""
    return key if loop_start[0] == 0 else f"{key}@start{loop_start[0]}of{loop_start[1]}"


def cache_nbytes(cache: SceneCache) -> int:
    return sum(v.nbytes for v in vars(cache).values() if isinstance(v, np.ndarray))


class _QuestionSet:
    """What the data sets share: `records` (one per question) and the scenes they are asked about."""

    records: list

    def __len__(self) -> int:
        return len(self.records)

    @property
    def scene_ids(self) -> list[str]:
        return sorted({r.scene_id for r in self.records})


class SituatedQADataset(_QuestionSet):
    """`dataset[i]` -> Sample. Scene caches are built on first use (files, see loc3r.data.cache) and the most
    recently used ones are kept in memory, up to `max_cache_bytes` (None: all); the others are read again from
    their files when needed, so memory stays bounded on a full ScanNet-size set."""

    def __init__(self, data_root: str | Path, split: str, num_frames: int, image_size: int, grid_hw,
                 cache_dir: str | Path | None = None,
                 camera_tokens: Callable[[str, np.ndarray], np.ndarray] | None = None,
                 scenes: list[str] | None = None, max_cache_bytes: int | None = DEFAULT_MAX_CACHE_BYTES,
                 grid_extent: float = 1.0, video_fps: float = 30.0, records: list | None = None):
        self.data_root = Path(data_root)
        self.num_frames, self.image_size, self.grid_hw = num_frames, image_size, tuple(grid_hw)
        self.grid_extent = grid_extent  # fraction of the frame the token grid covers (Loc3RConfig.frame_grid_extent)
        self.cache_dir = cache_dir
        self.video_fps = video_fps  # frame ids / fps = timestamps (Loc3RConfig.video_fps, ScanNet's 30 Hz)
        self.camera_tokens = camera_tokens  # (scene_id, frame_ids) -> [T, d], e.g. the CUT3R cache
        records = read_sqa3d(self.data_root, split) if records is None else records  # SQA3D's, or a reader's
        if scenes is not None:
            records = [r for r in records if r.scene_id in set(scenes)]
        self.records: list[SQA3DRecord | QARecord] = records
        self._alignments: dict[str, np.ndarray] = {}
        self.max_cache_bytes = max_cache_bytes
        self._scenes: OrderedDict[str, SceneCache] = OrderedDict()  # least recently used first
        self._scene_bytes = 0

    @property
    def video_keys(self) -> list[str]:
        """Per question, what identifies its video (questions of one key share their frames)."""
        return [r.scene_id for r in self.records]

    def scene(self, scene_id: str, loop_start: tuple[int, int] = (0, 1)) -> SceneCache:
        """The scene's cache: its video, or (loop_start (s, K)) that of its looped scan begun s/K of the way round."""
        key = video_key(scene_id, loop_start)
        if key in self._scenes:
            self._scenes.move_to_end(key)
            return self._scenes[key]
        cache = scene_cache(self.data_root, scene_id, self.num_frames, self.image_size, self.grid_hw, self.cache_dir,
                            self.grid_extent, loop_start)
        self._scenes[key] = cache
        self._scene_bytes += cache_nbytes(cache)
        while self.max_cache_bytes is not None and self._scene_bytes > self.max_cache_bytes and len(self._scenes) > 1:
            _, evicted = self._scenes.popitem(last=False)
            self._scene_bytes -= cache_nbytes(evicted)
        return cache

    @property
    def scenes_in_memory(self) -> list[str]:
        return list(self._scenes)

    def prepare(self, rank: int = 0, world_size: int = 1, loop_start: tuple[int, int] = (0, 1)) -> None:
        """Build (or load) the scene caches now, e.g. before training starts: this rank's share of the scenes
        (every world_size-th one from `rank`), so that data-parallel processes build them together."""
        for scene_id in self.scene_ids[rank::world_size]:
            self.scene(scene_id, loop_start)

    def axis_alignment(self, scene_id: str) -> np.ndarray:
        if scene_id not in self._alignments:
            self._alignments[scene_id] = ScanNetScene(self.data_root, scene_id).axis_alignment
        return self._alignments[scene_id]

    def speaker_pose(self, rec, sc: SceneCache) -> tuple[np.ndarray, float] | None:
        """The speaker's position [2] and yaw in the video's BEV frame, None for a question without a situation.
        SQA3D: relative to the raw mesh's bounding-box centre; MSQA: in the axis-aligned frame."""
        if isinstance(rec, QARecord):
            if not rec.has_situation:
                return None
            raw_xy, raw_yaw = geometry.aligned_to_raw_pose(self.axis_alignment(rec.scene_id), rec.location_xyz,
                                                           rec.facing_xy)
            xy, yaw = geometry.world_to_bev_pose(sc.world_to_bev, raw_xy, raw_yaw)
            return np.asarray(xy, np.float32), float(yaw)
        if not is_situated(rec.situation):
            return None
        if not np.isfinite(sc.mesh_center).all():
            raise Loc3rError(f"{rec.scene_id}: SQA3D positions need the scan's mesh "
                             f"({rec.scene_id}_vh_clean_2.ply) to find their origin")
        return rec.pose_in_bev(sc.world_to_bev, sc.mesh_center)

    def __getitem__(self, index: int) -> Sample:
        return self.sample(index)

    def sample(self, index: int, loop_start: tuple[int, int] = (0, 1)) -> Sample:
        """Question `index` on its scene's video (or the video of its looped scan begun at loop_start: see scene)."""
        rec = self.records[index]
        sc = self.scene(rec.scene_id, loop_start)
        pose = self.speaker_pose(rec, sc)
        situated = pose is not None
        xy, yaw = pose if situated else (np.zeros(2, np.float32), 0.0)
        tokens = self.camera_tokens(rec.scene_id, sc.frame_ids) if self.camera_tokens is not None else None
        return Sample(
            scene_id=rec.scene_id, question_id=rec.question_id if isinstance(rec.question_id, int) else index,
            frames=sc.frames, camera_poses_bev=sc.c2bev,
            layout_xy=sc.layout_xy, layout_valid=sc.layout_valid,
            situation=rec.situation if situated else NO_SITUATION, question=rec.question, answers=rec.answers,
            position_xy=xy, yaw_rad=yaw, has_situation=situated, question_type=rec.question_type,
            camera_tokens=tokens, frame_ids=sc.frame_ids, frame_times=sc.frame_ids / self.video_fps,
            duration_s=(sc.last_frame_id + 1) / self.video_fps)


class LoopStarts:
    """A training set on scans that are closed loops (loc3r synth's walks around the room), every question asked
    once on each of K videos of its scan, begun at K points spread evenly round the loop (the first: the scan's own
    start). Each is a video of its own with its own BEV frame (its first camera's), so every room comes in K frames
    of reference, against learning a room's poses by heart. Question i on start s is item s * N + i."""

    def __init__(self, dataset: SituatedQADataset, starts: int):
        self.dataset, self.starts, self.n = dataset, starts, len(dataset)

    def __len__(self) -> int:
        return self.n * self.starts

    @property
    def records(self) -> list:
        return self.dataset.records * self.starts

    @property
    def video_keys(self) -> list[str]:
        return [video_key(k, (s, self.starts)) for s in range(self.starts) for k in self.dataset.video_keys]

    def __getitem__(self, index: int) -> Sample:
        return self.dataset.sample(index % self.n, (index // self.n, self.starts))

    def prepare(self, rank: int = 0, world_size: int = 1) -> None:
        for s in range(self.starts):
            self.dataset.prepare(rank, world_size, (s, self.starts))


class VideoQADataset(_QuestionSet):
    """`dataset[i]` -> Sample of a question on a plain video (VSI-Bench): T frames sampled uniformly with PyAV
    from `<root>/<record.video>` (or VLM-3R's arrangement of the videos: benchmarks.vsibench_video); no poses (the
    poses prior sees them as unknown), no depth (no layout targets), no situation. `camera_tokens(frames)` -> [T, d]
    computes a prior's tokens from the frames (CUT3R), when given."""

    def __init__(self, root: str | Path, records: list[QARecord], num_frames: int, image_size: int, grid_hw,
                 camera_tokens: Callable[[np.ndarray], np.ndarray] | None = None):
        self.data_root, self.records = Path(root), records
        self.num_frames, self.image_size, self.grid_hw = num_frames, image_size, tuple(grid_hw)
        self.camera_tokens = camera_tokens
        self._videos: OrderedDict[str, tuple] = OrderedDict()  # the few most recent videos' frames

    @property
    def video_keys(self) -> list[str]:
        return [r.video for r in self.records]

    def video(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
        """Resized frames [T, S, S, 3], their times (s), prior tokens or None, the video's length (s)."""
        if name not in self._videos:
            from loc3r.data.video import read_video, resize_frames, video_frame_rate

            path = vsibench_video(self.data_root, name, str(self.data_root))
            raw, total = read_video(path, self.num_frames)
            fps = video_frame_rate(path) or 30.0
            times = uniform_indices(total, self.num_frames) / fps
            tokens = self.camera_tokens(raw) if self.camera_tokens is not None else None
            self._videos[name] = (resize_frames(raw, self.image_size), times, tokens, total / fps)
            while len(self._videos) > 8:
                self._videos.popitem(last=False)
        return self._videos[name]

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        frames, times, tokens, duration = self.video(rec.video)
        T, G = self.num_frames, self.grid_hw[0] * self.grid_hw[1]
        return Sample(scene_id=rec.scene_id, question_id=index, frames=frames,
                      camera_poses_bev=np.full((T, 4, 4), np.nan, np.float32),
                      layout_xy=np.zeros((T, G, 2), np.float32), layout_valid=np.zeros((T, G), bool),
                      situation=NO_SITUATION, question=rec.question, answers=rec.answers or [""],
                      position_xy=np.zeros(2, np.float32), yaw_rad=0.0, has_situation=False,
                      question_type=rec.question_type, camera_tokens=tokens, frame_times=times, duration_s=duration)
