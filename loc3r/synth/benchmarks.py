"""The synthetic rooms in the formats of the paper's other benchmarks, so that `loc3r eval --benchmark` runs on all
four without a download (written by `loc3r synth` after the scenes, from their ground-truth json):

    DIR/scanqa/ScanQA_v1.0_{train,val,test_w_obj}.json   the non-situated questions (open answers)
    DIR/msqa/msqa_scannet_{train,val,test}.json          the situated questions: location + facing vector in
                                                         the axis-aligned frame, MSQA question types
    DIR/vsibench/test.jsonl, DIR/vsibench/scannet/<scene>.mp4   VSI-Bench rows of the test scenes and their videos

VSI-Bench questions, answers exact from the scene (object boxes, room outline, camera path): object counting,
absolute distance (between the objects' box centres), object size (longest side, cm), room size (floor area, m^2),
relative distance (the nearest of four objects, box centres), relative direction (easy: left or right of the
line from A to B), appearance order (the frame in which an object's box centre first lies in the camera's view).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.io import atomic_path, write_json
from loc3r.synth.language import object_names
from loc3r.synth.scene import Scene

SCANQA_SPLIT = {"train": "train", "val": "val", "test": "test_w_obj"}
# our question families -> MSQA's question types (MSR3D matches them as substrings)
MSQA_TYPE = {"direction": "spatial relationship", "left_right": "spatial relationship", "nearest": "spatial relationship",
             "closer": "spatial relationship", "distance": "spatial relationship", "navigation": "navigation",
             "color": "attribute-color", "existence": "existence", "count": "counting", "color_unique": "attribute-color"}
LETTERS = "ABCD"


def _objects_of(spec: dict, scene: Scene) -> list[int]:
    if "objects" in spec:
        return list(spec["objects"])
    return [o.id for o in scene.objects if o.category == spec.get("category")]


def scanqa_entries(desc: dict, split: str) -> list[dict]:
    scene = Scene.from_json(desc)
    out = []
    for k, q in enumerate(x for x in desc["questions"] if x["situation_id"] is None):
        ids = _objects_of(q["spec"], scene)
        out.append({"scene_id": desc["scene_id"], "question_id": f"{split}-{desc['scene_id']}-{k}",
                    "question": q["question"], "answers": [q["answer"]], "object_ids": ids,
                    "object_names": [next(o.category for o in scene.objects if o.id == i) for i in ids]})
    return out


def msqa_entries(desc: dict, first_index: int) -> list[dict]:
    A = np.asarray(desc["axis_alignment"], np.float64)
    situations = {s["id"]: s for s in desc["situations"]}
    out = []
    for q in desc["questions"]:
        if q["situation_id"] is None:
            continue
        s = situations[q["situation_id"]]
        location = geometry.transform_points(A, np.array([[*s["position"], 0.0]]))[0]
        facing = A[:3, :3] @ np.array([np.cos(s["yaw"]), np.sin(s["yaw"]), 0.0])
        out.append({"scan_id": desc["scene_id"], "situation": s["text"], "question": q["question"],
                    "answers": [q["answer"]], "location": location.round(4).tolist(),
                    "orientation": facing.round(6).tolist(), "type": MSQA_TYPE[q["spec"]["type"]],
                    "index": first_index + len(out)})
    return out


def _in_view(c2w: np.ndarray, K: np.ndarray, hw: tuple[int, int], point: np.ndarray) -> bool:
    p = geometry.transform_points(geometry.invert_transform(c2w), point[None])[0]
    if p[2] <= 0.05:
        return False
    u, v = K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]
    return 0 <= u < hw[1] and 0 <= v < hw[0]


def vsibench_rows(desc: dict, c2w: np.ndarray, K: np.ndarray, hw: tuple[int, int], rng) -> list[dict]:
    """VSI-Bench rows of one scene (see the module docstring); c2w [N, 4, 4] the video's camera path."""
    scene = Scene.from_json(desc)
    names = {i: n for i, n in object_names(scene).items() if n is not None}
    objs = {o.id: o for o in scene.objects}
    sid = desc["scene_id"]
    rows = []

    def row(kind: str, question: str, truth, options=None):
        rows.append({"id": f"{sid}-{len(rows)}", "dataset": "scannet", "scene_name": sid, "question_type": kind,
                     "question": question, "ground_truth": str(truth), "options": options})

    categories = sorted({o.category for o in scene.objects})
    c = categories[int(rng.integers(len(categories)))]
    row("object_counting", f"How many {c}(s) are in this room?", sum(o.category == c for o in scene.objects))
    named = sorted(names)
    if len(named) >= 2:
        a, b = (int(i) for i in rng.choice(named, 2, replace=False))
        d = float(np.linalg.norm(objs[a].center - objs[b].center))
        row("object_abs_distance", f"What is the direct distance between the centres of the {names[a]} and the "
                                   f"{names[b]} (in meters)?", f"{d:.1f}")
    a = int(rng.choice(named)) if named else None
    if a is not None:
        row("object_size_estimation", f"What is the length of the longest dimension (length, width, or height) of "
                                      f"the {names[a]}, measured in centimeters?", int(round(100 * objs[a].size.max())))
    outline = np.asarray(desc["room"]["outline_xy"], np.float64)
    area = 0.5 * abs(np.dot(outline[:, 0], np.roll(outline[:, 1], -1)) - np.dot(outline[:, 1], np.roll(outline[:, 0], -1)))
    row("room_size_estimation", "What is the size of this room (in square meters)? If multiple rooms are shown, "
                                "estimate the size of the combined space.", f"{area:.1f}")
    if len(named) >= 5:
        target, *choices = (int(i) for i in rng.choice(named, 5, replace=False))
        dist = [np.linalg.norm(objs[i].center - objs[target].center) for i in choices]
        if sorted(dist)[1] - sorted(dist)[0] > 0.3:  # a clear nearest one
            options = [f"{LETTERS[k]}. {names[i]}" for k, i in enumerate(choices)]
            row("object_rel_distance", f"Measuring from the centre of each object, which of these objects "
                                       f"({', '.join(names[i] for i in choices)}) is the closest to the "
                                       f"{names[target]}?", LETTERS[int(np.argmin(dist))], options)
    for a, b, c3 in itertools.permutations(named, 3):
        ab, ac = objs[b].center[:2] - objs[a].center[:2], objs[c3].center[:2] - objs[a].center[:2]
        cross = ab[0] * ac[1] - ab[1] * ac[0]
        if abs(cross) / (np.linalg.norm(ab) * np.linalg.norm(ac) + 1e-9) > 0.5:  # clearly one side (> 30 deg)
            row("object_rel_direction_easy", f"If I am standing by the {names[a]} and facing the {names[b]}, is the "
                                             f"{names[c3]} to my left or to my right?",
                "A" if cross > 0 else "B", ["A. left", "B. right"])
            break
    first = {}
    for i in named:
        seen = [t for t in range(len(c2w)) if _in_view(c2w[t], K, hw, objs[i].center)]
        if seen:
            first[i] = seen[0]
    order = sorted(first, key=first.get)
    distinct = [i for i in order if list(first.values()).count(first[i]) == 1]
    if len(distinct) >= 3:
        three = [distinct[k] for k in sorted(rng.choice(len(distinct), 3, replace=False))]
        perms = [list(p) for p in itertools.permutations(three)]
        wrong = [p for p in perms if p != three]
        picks = [three] + [wrong[k] for k in rng.choice(len(wrong), 3, replace=False)]
        picks = [picks[k] for k in rng.permutation(4)]
        options = [f"{LETTERS[k]}. " + ", ".join(names[i] for i in p) for k, p in enumerate(picks)]
        listed = ", ".join(names[i] for i in sorted(three))
        row("obj_appearance_order", f"What will be the first-time appearance order of the following objects in the "
                                    f"video: {listed}?", LETTERS[picks.index(three)], options)
    return rows


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """An mp4 (MPEG-4 part 2, yuv420p) of RGB frames [N, H, W, 3], written atomically."""
    import av

    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def write_benchmark_files(out_dir: Path, scene_splits: dict[str, str], seed: int) -> None:
    """The ScanQA, MSQA and VSI-Bench files of written scenes ({scene_id: split}); see the module docstring."""
    from loc3r.data.scannet import ScanNetScene

    out_dir = Path(out_dir)
    scanqa = {split: [] for split in SCANQA_SPLIT}
    msqa = {split: [] for split in SCANQA_SPLIT}
    vsi = []
    rng = np.random.default_rng([seed, 7])
    for scene_id, split in sorted(scene_splits.items()):
        desc = json.loads((out_dir / "synth" / f"{scene_id}.json").read_text())
        scanqa[split] += scanqa_entries(desc, split)
        msqa[split] += msqa_entries(desc, len(msqa[split]))
        if split == "test":
            scan = ScanNetScene(out_dir, scene_id)
            ids = scan.frame_ids
            frames = np.stack([scan.read_color(i) for i in ids])
            write_video(out_dir / "vsibench" / "scannet" / f"{scene_id}.mp4", frames)
            vsi += vsibench_rows(desc, scan.read_poses(ids), scan.intrinsic_color, frames.shape[1:3], rng)
    for split, name in SCANQA_SPLIT.items():
        write_json(out_dir / "scanqa" / f"ScanQA_v1.0_{name}.json", scanqa[split], indent=None)
        write_json(out_dir / "msqa" / f"msqa_scannet_{split}.json", msqa[split], indent=None)
    with atomic_path(out_dir / "vsibench" / "test.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in vsi))

