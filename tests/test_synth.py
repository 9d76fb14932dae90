"""Synthetic rooms: renderer against closed forms and multi-view geometry, files read back through the real
formats, situations and answers re-derived from the written scene description, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loc3r import geometry as g
from loc3r.cli import main as cli_main
from loc3r.constants import NO_SITUATION
from loc3r.errors import Loc3rError
from loc3r.synth import language, shapes, situations
from loc3r.synth.catalog import CATEGORIES, ROOM_TYPES
from loc3r.synth.render import intrinsics, render
from loc3r.synth.scene import Room, Scene, SceneObject, sample_scene
from loc3r.synth.trajectory import camera_path
from loc3r.synth.writer import build_scene, generate, scene_splits

SEED, N_SCENES, FRAMES, SIZE = 7, 3, 16, 64


@pytest.fixture(scope="module", params=["basic", "realistic"])
def out_dir(tmp_path_factory, request) -> Path:
    out = tmp_path_factory.mktemp(f"synth_{request.param}")
    generate(out, N_SCENES, SEED, frames=FRAMES, size=SIZE, style=request.param)
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def scene_json(out_dir: Path, index: int) -> dict:
    return json.loads((out_dir / "synth" / f"scene{index:04d}_00.json").read_text())


def read_sqa3d(out_dir: Path) -> tuple[dict, dict]:
    questions, annotations = {}, {}
    for split in ("train", "val", "test"):
        base = out_dir / "sqa_task" / "balanced"
        for q in json.loads((base / f"v1_balanced_questions_{split}_scannetv2.json").read_text())["questions"]:
            questions[q["question_id"]] = q
        for a in json.loads((base / f"v1_balanced_sqa_annotations_{split}_scannetv2.json").read_text())["annotations"]:
            annotations[a["question_id"]] = a
    return questions, annotations


def read_ply(path: Path) -> np.ndarray:
    """Vertices [V, 3] of a binary little-endian PLY with ScanNet's vertex layout."""
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    n = int(next(line.split()[-1] for line in header.decode().splitlines() if line.startswith("element vertex")))
    v = np.frombuffer(body[: n * 16], dtype=[("xyz", "<f4", (3,)), ("rgba", "u1", (4,))])
    return v["xyz"].astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------------------

def empty_room(width=4.0, depth=3.0, height=2.5, objects=()) -> Scene:
    outline = np.array([[0, 0], [width, 0], [width, depth], [0, depth]], np.float64)
    return Scene("test", "Office", Room(outline, height, (150, 110, 75), (225, 222, 210)), list(objects))


def test_depth_of_a_fronto_parallel_wall_is_constant():
    """A level camera facing the +x wall: every wall pixel has z-depth = distance to the wall."""
    scene = empty_room(width=4.0, depth=8.0)
    eye = np.array([1.0, 4.0, 1.25])
    c2w = g.look_at_c2w(eye, eye + [1.0, 0.0, 0.0])[None]
    _, depth = render(scene, c2w, intrinsics(64), 64)
    assert np.allclose(depth[0, 24:40, :], 3.0, atol=1e-5)  # rows around the horizon see the wall at x = 4


def test_unprojected_depth_lies_on_scene_surfaces():
    """Every pixel's 3D point is on the floor, ceiling, a wall or an object face (exact, before quantisation)."""
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, "s")
    c2w = camera_path(scene, 6, rng)
    K = intrinsics(48)
    _, depth = render(scene, c2w, K, 48)
    assert (depth > 0).all()
    pts = g.depth_to_points(depth, K, c2w).reshape(-1, 3)
    d = np.minimum(np.abs(pts[:, 2]), np.abs(pts[:, 2] - scene.room.height_m))
    d = np.minimum(d, np.abs(shapes.wall_distance(pts[:, :2], scene.room.outline_xy)))
    for obj in scene.objects:
        for center, size, _ in obj.world_parts():
            local = np.concatenate([shapes.rotate_xy(pts[:, :2] - center[:2], -obj.yaw), pts[:, 2:] - center[2]], -1)
            q = np.abs(local) - size / 2  # box signed distance
            sd = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
            d = np.minimum(d, np.abs(sd))
    assert d.max() < 1e-6


def test_multiview_depth_consistency(out_dir):
    """Frame i's depth, unprojected and reprojected into frame i+1, agrees with frame i+1's depth where co-visible
    (depth as read back from the PNGs: millimetre steps)."""
    scan = out_dir / "scans" / "scene0000_00"
    K = np.loadtxt(scan / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    depth = np.stack([np.array(Image.open(scan / "depth" / f"{i}.png")) for i in range(FRAMES)]) / 1000.0
    poses = np.stack([np.loadtxt(scan / "pose" / f"{i}.txt") for i in range(FRAMES)])
    overlapping = 0
    for i in range(FRAMES - 1):
        j = i + 1
        world = g.depth_to_points(depth[i], K, poses[i])[depth[i] > 0]
        uv, z = g.project_points(g.transform_points(g.invert_transform(poses[j]), world), K)
        inside = (z > 0.1) & (uv >= 0).all(-1) & (uv <= SIZE - 1.001).all(-1)
        uv, z = uv[inside], z[inside]
        # Inverse depth is affine across a planar patch: interpolate it bilinearly between the 4 neighbours.
        u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
        inv = 1.0 / np.where(depth[j] > 0, depth[j], np.inf)
        inv_j = ((1 - fu) * (1 - fv) * inv[v0, u0] + fu * (1 - fv) * inv[v0, u0 + 1]
                 + (1 - fu) * fv * inv[v0 + 1, u0] + fu * fv * inv[v0 + 1, u0 + 1])
        covisible = np.abs(1.0 / inv_j - z) < 0.05  # not occluded in frame j
        if covisible.sum() < 0.05 * SIZE * SIZE:  # the camera turned away (a corner of the walk)
            continue
        overlapping += covisible.sum() > 0.2 * SIZE * SIZE
        assert (np.abs(1.0 / inv_j - z)[covisible] < 0.01).mean() > 0.9, (i, j)
    assert overlapping >= (FRAMES - 1) // 2


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------

def test_layout_and_meta(out_dir):
    for index in range(N_SCENES):
        sid = f"scene{index:04d}_00"
        scan = out_dir / "scans" / sid
        for sub, ext in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
            assert sorted(p.name for p in (scan / sub).iterdir()) == sorted(f"{i}.{ext}" for i in range(FRAMES))
        meta = dict(line.split(" = ") for line in (scan / f"{sid}.txt").read_text().splitlines())
        assert int(meta["numColorFrames"]) == FRAMES and int(meta["colorWidth"]) == SIZE
        A = np.array(meta["axisAlignment"].split(), np.float64).reshape(4, 4)
        assert np.allclose(A, scene_json(out_dir, index)["axis_alignment"], atol=0, rtol=0)
        assert np.allclose(A[:3, :3] @ A[:3, :3].T, np.eye(3)) and np.allclose(A[2], [0, 0, 1, 0])
        with Image.open(scan / "depth" / "0.png") as depth, Image.open(scan / "color" / "0.jpg") as color:
            assert depth.mode == "I;16" and color.size == (SIZE, SIZE)


def test_files_read_back_to_the_generated_data(out_dir):
    data = build_scene(SEED, 1, FRAMES, SIZE, scene_json(out_dir, 1)["style"])
    scan = out_dir / "scans" / data.scene_id
    for i in range(FRAMES):
        assert np.allclose(np.loadtxt(scan / "pose" / f"{i}.txt"), data.c2w_raw[i], rtol=0, atol=1e-12)
        depth_mm = np.array(Image.open(scan / "depth" / f"{i}.png"))
        assert np.array_equal(depth_mm, np.round(data.depth_m[i].astype(np.float64) * 1000).astype(np.uint16))
        rgb = np.array(Image.open(scan / "color" / f"{i}.jpg")).astype(float)
        assert np.abs(rgb - data.rgb[i]).mean() < 6.0  # JPEG at quality 90
    assert np.allclose(np.loadtxt(scan / "intrinsic" / "intrinsic_color.txt")[:3, :3], data.K, atol=1e-6)
    assert np.array_equal(read_ply(scan / f"{data.scene_id}_vh_clean_2.ply"), data.mesh[0].astype(np.float64))
    # The poses are the rendered ones: the camera sits inside the raw-frame room.
    desc = scene_json(out_dir, 1)
    inside = shapes.points_in_polygon(data.c2w_raw[:, :2, 3], np.array(desc["room"]["outline_xy"]))
    assert inside.all()


def test_sqa3d_pose_is_raw_position_minus_mesh_center(out_dir):
    questions, annotations = read_sqa3d(out_dir)
    for index in range(N_SCENES):
        desc = scene_json(out_dir, index)
        sid = desc["scene_id"]
        vertices = read_ply(out_dir / "scans" / sid / f"{sid}_vh_clean_2.ply")
        center = (vertices.max(0) + vertices.min(0)) / 2
        assert np.allclose(center, desc["mesh_bbox_center"], atol=1e-12)
        for q in desc["questions"]:
            a = annotations[q["question_id"]]
            assert list(a) == ["answer_type", "answers", "position", "question_id", "question_type", "rotation",
                               "scene_id"]
            assert np.allclose([a["position"]["x"] + center[0], a["position"]["y"] + center[1]], q["position"])
            assert a["position"]["z"] == 0
            r = a["rotation"]
            yaw = g.sqa3d_quat_to_yaw([r["_x"], r["_y"], r["_z"], r["_w"]])
            assert abs(g.angle_diff(yaw, q["yaw"])) < 1e-9
            assert a["answers"][0]["answer"] == q["answer"] and a["scene_id"] == sid


def test_splits_and_question_ids(out_dir):
    questions, annotations = read_sqa3d(out_dir)
    assert questions.keys() == annotations.keys()
    all_ids = [q["question_id"] for i in range(N_SCENES) for q in scene_json(out_dir, i)["questions"]]
    assert len(all_ids) == len(set(all_ids)) == len(questions)
    for n, n_train in ((1, 1), (2, 2), (3, 1), (10, 8), (100, 80)):
        splits = scene_splits(n, SEED)
        assert splits.count("train") == n_train and splits.count("val") == splits.count("test")
        assert n < 3 or splits.count("val") >= 1
    base = out_dir / "sqa_task" / "balanced"
    for split in ("train", "val", "test"):
        q = json.loads((base / f"v1_balanced_questions_{split}_scannetv2.json").read_text())
        assert list(q) == ["info", "license", "data_type", "data_subtype", "task_type", "questions"]
        assert q["questions"] and {s["scene_id"] for s in q["questions"]}.isdisjoint(
            {s["scene_id"] for other in ("train", "val", "test") if other != split
             for s in json.loads((base / f"v1_balanced_questions_{other}_scannetv2.json").read_text())["questions"]})
        assert list(q["questions"][0]) == ["alternative_situation", "question", "question_id", "scene_id", "situation"]


def test_same_seed_identical_files_any_worker_count(out_dir, tmp_path):
    style = scene_json(out_dir, 0)["style"]
    generate(tmp_path / "again", N_SCENES, SEED, frames=FRAMES, size=SIZE, workers=2, style=style)
    assert read_tree(tmp_path / "again") == read_tree(out_dir)
    generate(tmp_path / "other", 1, SEED + 1, frames=FRAMES, size=SIZE, style=style)
    other = read_tree(tmp_path / "other")
    assert other["scans/scene0000_00/color/0.jpg"] != read_tree(out_dir)["scans/scene0000_00/color/0.jpg"]


def test_rerun_with_fewer_scenes_removes_the_rest(out_dir, tmp_path):
    generate(tmp_path / "d", 2, SEED, frames=2, size=32)
    generate(tmp_path / "d", 1, SEED, frames=2, size=32)
    assert [p.name for p in (tmp_path / "d" / "scans").iterdir()] == ["scene0000_00"]
    assert [p.name for p in (tmp_path / "d" / "synth").iterdir()] == ["scene0000_00.json"]


@pytest.mark.parametrize("argv", [["--scenes", "0"], ["--size", "100"], ["--size", "0"], ["--frames", "1"],
                                  ["--workers", "0"], ["--seed", "-1"]])
def test_bad_arguments_are_one_line_errors(argv, tmp_path, capsys):
    args = {"--scenes": "1", "--seed": "0", "--size": "32", "--frames": "2"}
    args.update(dict(zip(argv[::2], argv[1::2])))
    assert cli_main(["synth", "--out", str(tmp_path / "o"), *sum(args.items(), ())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("loc3r: error: ") and err.count("\n") == 1
    with pytest.raises(Loc3rError):
        generate(tmp_path / "o", int(args["--scenes"]), int(args["--seed"]), int(args["--frames"]), int(args["--size"]),
                 int(args.get("--workers", 1)))


# ---------------------------------------------------------------------------------------------------------
# Scenes, situations, questions
# ---------------------------------------------------------------------------------------------------------

def test_rooms_are_varied_and_furniture_is_physically_placed():
    categories, l_shapes = set(), 0
    for i in range(40):
        scene = sample_scene(np.random.default_rng([11, i]), "s")
        outline = scene.room.outline_xy
        sides = outline.max(0) - outline.min(0)
        assert ((sides >= 3.0) & (sides <= 9.0)).all()
        l_shapes += len(outline) == 6
        assert 4 <= len(scene.objects) <= 12
        assert set(ROOM_TYPES[scene.scene_type][0]) <= {o.category for o in scene.objects}  # a bedroom has a bed
        categories |= {o.category for o in scene.objects}
        floor = [o for o in scene.objects if o.on_top_of is None]
        for k, o in enumerate(floor):
            assert shapes.footprint_inside_polygon(o.center[:2], o.size[:2] / 2, o.yaw, outline)
            assert np.isclose(o.center[2], o.size[2] / 2)
            for p in floor[k + 1:]:
                assert not shapes.footprints_overlap(o.center[:2], o.size[:2] / 2, o.yaw,
                                                     p.center[:2], p.size[:2] / 2, p.yaw)
        for o in scene.objects:
            if o.on_top_of is not None:
                s = next(x for x in scene.objects if x.id == o.on_top_of)
                assert np.isclose(o.center[2] - o.size[2] / 2, s.size[2])  # stands on the support's top
                corners = shapes.footprint_corners(o.center[:2], o.size[:2] / 2, o.yaw)
                inside = shapes.footprint_distance(corners, s.center[None, :2], s.size[None, :2] / 2, [s.yaw])
                assert (inside <= 1e-9).all()
    assert len(categories) >= 12 and l_shapes >= 2
    assert categories <= set(CATEGORIES)


def test_situations_are_in_free_space(out_dir):
    for index in range(N_SCENES):
        desc = scene_json(out_dir, index)
        scene = Scene.from_json(desc)
        assert len(desc["situations"]) >= 4
        poses = [s["position"] for s in desc["situations"]] + [q["position"] for q in desc["questions"]]
        p = np.array(poses)
        assert shapes.points_in_polygon(p, scene.room.outline_xy).all()
        assert (shapes.footprint_distance(p, *scene.footprints()).min(-1) >= situations.FREE_M - 1e-9).all()


def _relation_holds_independently(scene: Scene, relation: str, ids, position, yaw) -> bool:
    """The relations as a reader checks them, from the description alone (tolerances as stated in the docs)."""
    objs = [next(o for o in scene.objects if o.id == i) for i in ids]
    bearing = g.angle_diff(g.yaw_of_direction(objs[0].center[:2] - position), yaw)
    if relation == "facing":
        return abs(bearing) <= np.radians(30)
    if relation == "left":
        return np.radians(45) <= bearing <= np.radians(135)
    if relation == "right":
        return -np.radians(135) <= bearing <= -np.radians(45)
    if relation == "behind":
        return abs(bearing) >= np.radians(135)
    if relation == "near":
        return shapes.footprint_distance(position[None], objs[0].center[None, :2], objs[0].size[None, :2] / 2,
                                         [objs[0].yaw])[0, 0] <= 1.0
    a, b = objs[0].center[:2], objs[1].center[:2]  # between: projects inside the segment, close to it
    t = (position - a) @ (b - a) / np.sum((b - a) ** 2)
    ab, ap = b - a, position - a
    lateral = abs(ab[0] * ap[1] - ab[1] * ap[0]) / np.linalg.norm(ab)
    return 0 < t < 1 and lateral < 1.0


def test_situation_texts_are_true_and_unambiguous(out_dir):
    questions, _ = read_sqa3d(out_dir)
    for index in range(N_SCENES):
        desc = scene_json(out_dir, index)
        scene = Scene.from_json(desc)
        names = language.object_names(scene)
        grid = situations.free_grid(scene)
        for s in desc["situations"]:
            position, yaw = np.array(s["position"]), s["yaw"]
            for d in [s, *s["alternatives"]]:
                slots = {k: int(v) for k, v in d["objects"].items()}
                assert d["text"] == language.situation_text(d["template"], {k: names[v] for k, v in slots.items()})
                assert all(names[v] is not None for v in slots.values())
                for relation, *slot_names in language.SITUATION_TEMPLATES[d["template"]][1]:
                    assert _relation_holds_independently(scene, relation, [slots[n] for n in slot_names], position, yaw)
                if scene.style == "realistic":
                    assert situations.is_unambiguous(scene, grid, d["template"], slots, position, yaw)
            for qid in s["question_ids"]:
                assert questions[qid]["situation"] == s["text"]
                assert questions[qid]["alternative_situation"] == [a["text"] for a in s["alternatives"]]


def test_basic_rooms_name_objects_by_unique_colour_and_pin_the_pose_down():
    """Basic rooms: 4-6 objects of distinct categories and colours; a situation stands next to its anchor a, on the
    line towards its target b (within the lateral jitter), BASIC_REACH_M from a's footprint, facing b."""
    for index in range(6):
        data = build_scene(SEED, index, 2, 32, "basic")
        scene, desc = data.raw, data.situations
        assert scene.style == "basic" and 4 <= len(scene.objects) <= 6
        assert len({o.color for o in scene.objects}) == len({o.category for o in scene.objects}) == len(scene.objects)
        names = language.object_names(scene)
        assert all(names[o.id] == f"{o.color} {o.category}" for o in scene.objects)
        assert len(desc) >= 12
        by_id = {o.id: o for o in scene.objects}
        for s in desc:
            a, b = by_id[s["objects"]["a"]], by_id[s["objects"]["b"]]
            p = np.array(s["position"])
            reach = shapes.footprint_distance(p[None], a.center[None, :2], a.size[None, :2] / 2, [a.yaw])[0, 0]
            # the position is found on a 1% grid of the centre line, then moved sideways by at most 0.3 m
            assert situations.BASIC_REACH_M[0] - 0.07 <= reach <= np.hypot(situations.BASIC_REACH_M[1], 0.3) + 0.07
            ab = (b.center[:2] - a.center[:2]) / np.linalg.norm(b.center[:2] - a.center[:2])
            lateral = abs(ab[0] * (p - a.center[:2])[1] - ab[1] * (p - a.center[:2])[0])
            assert lateral <= 0.3 + 1e-9 and (p - a.center[:2]) @ ab > 0
            facing = g.angle_diff(g.yaw_of_direction(b.center[:2] - p), s["yaw"])
            assert abs(facing) <= np.radians(15)
            assert s["text"] == language.situation_text(s["template"], {"a": names[a.id], "b": names[b.id]})


def test_answers_rederive_from_the_scene_description(out_dir):
    questions, annotations = read_sqa3d(out_dir)
    kinds = set()
    for index in range(N_SCENES):
        desc = scene_json(out_dir, index)
        scene = Scene.from_json(desc)
        for q in desc["questions"]:
            kinds.add(q["spec"]["type"])
            assert language.answer(scene, q["spec"], np.array(q["position"]), q["yaw"]) == q["answer"]
            assert language.question_text(scene, q["spec"]) == q["question"] == questions[q["question_id"]]["question"]
            assert annotations[q["question_id"]]["answers"][0]["answer"] == q["answer"] == q["answer"].lower()
            if q["situation_id"] is None:
                assert questions[q["question_id"]]["situation"] == NO_SITUATION
                assert q["spec"]["type"] in language.NON_SITUATED_TYPES
    assert kinds >= {"direction", "existence", "count", "closer"}


def test_answers_against_hand_made_scene():
    """A speaker at the origin facing +x, a bed ahead, a chair on the left, a sofa behind, a lamp on the right."""
    def obj(i, cat, color, x, y):
        size = np.array(CATEGORIES[cat].floor_size[0])
        return SceneObject(i, cat, color, np.array([x, y, size[2] / 2]), size, 0.0)
    scene = empty_room(10, 10, objects=[obj(0, "bed", "blue", 2.7, 0.0), obj(1, "chair", "red", 0.0, 1.5),
                                        obj(2, "sofa", "gray", -2.5, 0.0), obj(3, "lamp", "white", 0.0, -3.5),
                                        obj(4, "chair", "green", 0.0, 4.0)])
    scene.room.outline_xy = scene.room.outline_xy - 5.0
    p, yaw = np.zeros(2), 0.0
    ask = lambda **spec: language.answer(scene, {"form": 0, **spec}, p, yaw)  # noqa: E731
    assert ask(type="direction", sector="front") == "bed"
    assert ask(type="direction", sector="left") == "chair"
    assert ask(type="direction", sector="behind") == "sofa"
    assert ask(type="direction", sector="right") == "lamp"
    assert ask(type="nearest") == "chair"
    assert ask(type="count", category="chair") == "two"
    assert ask(type="existence", category="toilet") == "no"
    assert ask(type="closer", objects=[0, 3]) == "bed"
    assert ask(type="left_right", objects=[1]) == "left"
    assert ask(type="navigation", objects=[2]) == "backward"
    assert ask(type="color", category="chair", sector="left") is None  # two chairs on the left: no clear answer
    assert ask(type="color_unique", category="sofa") == "gray"
    assert ask(type="distance", objects=[0]) == "two meters"  # the bed's footprint starts at x = 2.05
    assert language.object_names(scene)[1] == "red chair" and language.object_names(scene)[0] == "bed"


def test_vocabulary_covers_every_text(out_dir):
    vocab = set(language.vocabulary())
    questions, annotations = read_sqa3d(out_dir)
    texts = [NO_SITUATION]
    for q in questions.values():
        texts += [q["situation"], q["question"], *q["alternative_situation"]]
    texts += [a["answers"][0]["answer"] for a in annotations.values()]
    for text in texts:
        assert set(language.tokenize(text)) <= vocab, text
    assert {".", ",", "?", "trash", "can", "bookshelves", "twelve", "meters", "purple"} <= vocab
    assert language.tokenize("I am facing the tv.") == ["i", "am", "facing", "the", "tv", "."]


def test_leftovers_of_a_killed_run_are_ignored_then_removed(tmp_path):
    from loc3r.data.scannet import list_scenes

    out = tmp_path / "d"
    generate(out, 1, SEED, frames=2, size=32)
    stale_dir = out / "scans" / ".scene0001_00.abc123.tmp"  # what atomic_dir leaves when killed
    (stale_dir / "color").mkdir(parents=True)
    stale_file = out / "synth" / ".scene0000_00.json.xyz.tmp"
    stale_file.write_text("{")
    assert list_scenes(out) == ["scene0000_00"]
    generate(out, 1, SEED, frames=2, size=32)
    assert not stale_dir.exists() and not stale_file.exists()


def test_synth_never_writes_over_data_it_did_not_write(tmp_path, capsys):
    real = tmp_path / "scannet"
    (real / "scans" / "scene0000_00").mkdir(parents=True)
    (real / "scans" / "scene0000_00" / "scene0000_00.txt").write_text("axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1")
    assert cli_main(["synth", "--out", str(real), "--scenes", "1", "--seed", "0", "--frames", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not written by `loc3r synth`" in err and "--overwrite" in err
    assert (real / "scans" / "scene0000_00" / "scene0000_00.txt").read_text().startswith("axisAlignment")
    assert not (real / "synth").exists()
    own = tmp_path / "own"
    generate(own, 1, SEED, frames=2, size=32)
    generate(own, 1, SEED, frames=2, size=32)  # its own root: rewritten
    generate(real, 1, SEED, frames=2, size=32, overwrite=True)
    assert (real / "synth" / "scene0000_00.json").is_file()


def test_relation_questions_add_to_a_room_without_changing_the_rest():
    """synth --relations K: the room's other questions exactly as without it, then up to K more per situation, each a
    left / right, navigation or distance question with the answer its pose gives, never asked twice of a situation."""
    from loc3r.synth.situations import RELATION_KINDS

    plain, dense = build_scene(SEED, 2, 2, 32, "basic"), build_scene(SEED, 2, 2, 32, "basic", relations=3)
    n = len(plain.questions)
    strip = [{k: v for k, v in q.items() if k != "question_id"} for q in dense.questions[:n]]
    assert strip == [{k: v for k, v in q.items() if k != "question_id"} for q in plain.questions]
    extra = dense.questions[n:]
    assert 0 < len(extra) <= 3 * len(dense.situations) and {q["question_type"] for q in extra} <= set(RELATION_KINDS)
    asked = [(q["situation_id"], q["question_type"], tuple(q["spec"]["objects"])) for q in dense.questions
             if q["question_type"] in RELATION_KINDS]
    assert len(asked) == len(set(asked))
    for q in extra:
        assert q["answer"] == language.answer(dense.raw, q["spec"], np.array(q["position"]), q["yaw"])
