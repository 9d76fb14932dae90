"""Where scans in the posed-images layout of Video-3D-LLM and LLaVA-3D keep their files, read where they are (no
re-export; loc3r.data.scannet.ScanNetScene reads them).

    <root>/posed_images/<scene_id>/<05d>.jpg      RGB frames, named by their frame index in the sensor stream
                                   <05d>.png      uint16 depth in millimetres, 0 = no measurement
                                   <05d>.txt      4x4 camera-to-world, raw scan frame (-inf where tracking was lost)
                                   intrinsic.txt, depth_intrinsic.txt   4x4 colour / depth intrinsics
    <root>/scans/<scene_id>/<scene_id>.txt, <scene_id>_vh_clean_2.ply   ScanNet's own files, where the user kept them
    <root>/embodiedscan/embodiedscan_infos_*.json | .pkl                 EmbodiedScan's info files (axis alignment)

As their exporter writes it: LaVi-Lab/Video-3D-LLM `scripts/3d/preprocessing/generate_image_scannet.py` (adapted
from OpenRobotLab/EmbodiedScan `embodiedscan/converter/generate_image_scannet.py`) writes the frames with the
5-digit frame index, the depth as the `.sens` file's uint16 millimetres, the poses as stored (raw camera-to-world)
and the two intrinsics; its `--fast` keeps every tenth frame, whose names keep their index, so frame times stay
index / 30 Hz. Video-3D-LLM's `llava/video_utils.py` reads the depth beside the `.jpg` as `.png` in millimetres
and the pose as `.txt`, and moves poses into the axis-aligned frame with EmbodiedScan's `axis_align_matrix`;
LLaVA-3D (ZCMax/LLaVA-3D `llava/model/multimodal_encoder/video_processor.py`, `extract_embodiedscan_frames`) reads
the same frames with the same matrix from its `embodiedscan_infos_full.json`; its reader of ScanNet frame folders
(`valid_pose`) skips frames whose pose holds inf, as loc3r does for every layout.

The axis alignment (raw -> aligned, for MSQA) is ScanNet's `<scene_id>.txt` where the user has it, else the
scene's entry in EmbodiedScan's info files (loc3r.data.embodiedscan); a scan with neither is an error when asked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loc3r.data import embodiedscan


class PosedImagesLayout:
    """Where Video-3D-LLM / LLaVA-3D's posed images keep a scan's files (the module docstring's layout), for
    loc3r.data.scannet.ScanNetScene, which reads them."""

    name = "posed_images"

    def __init__(self, root: Path, scene_id: str):
        self.root, self.scene_id = root, scene_id
        self.dir = self.frame_dir = self.pose_dir = root / "posed_images" / scene_id
        self.intrinsic_color = self.dir / "intrinsic.txt"
        self.intrinsic_depth = self.dir / "depth_intrinsic.txt"
        scan_dir = root / "scans" / scene_id  # ScanNet's own folder, which Video-3D-LLM keeps beside
        self.meta = scan_dir / f"{scene_id}.txt"
        self.mesh = scan_dir / f"{scene_id}_vh_clean_2.ply"

    def color(self, i: int) -> Path:
        return self.dir / f"{i:05d}.jpg"

    def depth(self, i: int) -> Path:
        return self.dir / f"{i:05d}.png"

    def pose(self, i: int) -> Path:
        return self.dir / f"{i:05d}.txt"

    def axis_alignment_without_meta(self) -> np.ndarray:
        """The scan's axis_align_matrix in EmbodiedScan's info files (without ScanNet's meta file)."""
        return embodiedscan.axis_alignment(self.root, self.scene_id, missing=self.meta)

    def source_files(self, frame_ids) -> list[Path]:
        """What a cache built from these frames depends on (loc3r.data.cache.source_fingerprint)."""
        entries = [self.dir, self.intrinsic_color, self.intrinsic_depth, self.meta, self.mesh]
        entries += embodiedscan.info_files(self.root)
        for i in np.asarray(frame_ids).tolist():
            entries += [self.color(i), self.depth(i), self.pose(i)]
        return entries
