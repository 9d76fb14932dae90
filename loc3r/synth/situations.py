"""Sampling situations (a speaker's pose + its description) and questions for a synthetic scene.

A situation's pose is sampled in free space (at least FREE_M from walls and furniture) within reach of an
anchor object, facing an object or a random way. Its description is a template (language.py) whose relations
hold *strictly* at the pose, and it must be unambiguous: every pose of a grid over the room's free space
(GRID_M apart, N_YAW headings) at which all the relations hold *loosely* lies within POSITION_SPREAD_M and
YAW_SPREAD_RAD of the true pose. Otherwise another description or pose is drawn.

In "basic" rooms (scene.py) a situation is simpler and its pose follows from the two objects it names: the
speaker stands next to object A, on the side of A that faces object B, at BASIC_REACH_M from A's footprint
(within BASIC_LATERAL_M of the line between the two centres), and faces B: "I am standing next to the red bed,
facing the blue sofa." Its description holds strictly at the pose; no other description is searched.

Each situation gets QUESTIONS_PER_SITUATION questions of different types whose answers are clear
(language.answer is not None). Non-situated questions (existence, counting, the colour of a unique category)
use NO_SITUATION and the pose of a random free spot, as SQA3D always stores a pose.
"""

from __future__ import annotations

import numpy as np

from loc3r import geometry
from loc3r.synth import language, relations
from loc3r.synth.catalog import CATEGORIES
from loc3r.synth.scene import Scene

FREE_M = 0.3  # a speaker stands at least this far from walls and object footprints
ANCHOR_REACH_M = (0.3, 1.0)  # distance from the anchor object's footprint to a sampled position
GRID_M = 0.2  # spacing of the candidate positions of the ambiguity check
N_YAW = 36  # candidate headings of the ambiguity check
POSITION_SPREAD_M = 1.5  # a description fits no pose farther than this from the true position ...
YAW_SPREAD_RAD = np.radians(45)  # ... nor any heading farther than this from the true yaw
SITUATIONS_PER_SCENE = 8
QUESTIONS_PER_SITUATION = 4  # of different types
NON_SITUATED_KINDS = ("existence", "existence", "count", "count", "color_unique", "color_unique")  # per scene
RELATION_KINDS = ("left_right", "navigation", "distance")  # answered from the speaker's pose and the room together
MAX_ALTERNATIVES = 2  # SQA3D gives two alternative descriptions of each situation
BASIC_TEMPLATES = ("near_facing", "near_looking", "by_facing")  # the phrasings of a basic situation
BASIC_REACH_M = (0.3, 0.6)  # distance of a basic situation from its anchor's footprint ...
BASIC_LATERAL_M = 0.15  # ... and at most this far (std) from the line from the anchor's centre to the target's
BASIC_MIN_GAP_M = 1.0  # the facing target's footprint is at least this far from the speaker
BASIC_YAW_STD_RAD = np.radians(4)
BASIC_SITUATIONS_PER_SCENE = 16
BASIC_QUESTIONS_PER_SITUATION = 2


def free_grid(scene: Scene) -> np.ndarray:
    """[P, 2] grid points of the room's free space (clearance >= FREE_M)."""
    lo, hi = scene.room.outline_xy.min(0), scene.room.outline_xy.max(0)
    xs, ys = np.arange(lo[0] + GRID_M / 2, hi[0], GRID_M), np.arange(lo[1] + GRID_M / 2, hi[1], GRID_M)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    return grid[scene.clearance_m(grid) >= FREE_M]


def description_holds(scene: Scene, template: str, slots: dict[str, int], position_xy, yaw_rad, loose: bool,
                      grid: bool = False):
    """Whether all relations of a situation template hold at poses (shapes as in relations.holds)."""
    ok = None
    for relation, *slot_names in language.SITUATION_TEMPLATES[template][1]:
        h = relations.holds(scene, relation, [slots[n] for n in slot_names], position_xy, yaw_rad, loose, grid)
        ok = h if ok is None else ok & h
    return ok


def is_unambiguous(scene: Scene, grid, template: str, slots: dict[str, int], position_xy, yaw_rad: float) -> bool:
    """No pose of the free-space grid far from (position, yaw) fits the description (loose relations)."""
    yaws = np.arange(N_YAW) * 2 * np.pi / N_YAW
    rels = sorted(language.SITUATION_TEMPLATES[template][1], key=lambda r: r[0] not in ("near", "between"))
    positions, fit = grid, np.ones((len(grid), N_YAW), bool)
    for relation, *slot_names in rels:  # position-only relations first: they thin the grid fastest
        fit = fit & relations.holds(scene, relation, [slots[n] for n in slot_names], positions, yaws, True, grid=True)
        keep = fit.any(-1)
        positions, fit = positions[keep], fit[keep]
    far_position = np.linalg.norm(positions - np.asarray(position_xy), axis=-1) > POSITION_SPREAD_M
    far_yaw = np.abs(geometry.angle_diff(yaws, yaw_rad)) > YAW_SPREAD_RAD
    return not (fit & (far_position[:, None] | far_yaw[None])).any()


def _descriptions(scene: Scene, names, position_xy, yaw_rad: float, rng) -> list[tuple[str, dict[str, int]]]:
    """(template, slots) pairs whose relations hold strictly at the pose, naming only nameable objects."""
    nameable = [i for i, n in names.items() if n is not None]
    p, y = np.asarray(position_xy)[None], np.array([yaw_rad])
    ids = np.array([o.id for o in scene.objects])
    table = relations.unary_table(scene, position_xy, yaw_rad, loose=False)
    strict = {rel: set(ids[ok].tolist()) for rel, ok in table.items()}
    found = []
    for template, (_, rels) in language.SITUATION_TEMPLATES.items():
        slot_names = sorted({s for _, *ss in rels for s in ss})
        pools = {s: set(nameable).intersection(*(strict[r] for r, *ss in rels if ss == [s])) for s in slot_names}
        if not all(pools.values()):
            continue
        for _ in range(4):  # a few random fillings per template, distinct objects in distinct slots
            slots = {}
            for s in slot_names:
                pool = pools[s] - set(slots.values())
                if not pool:
                    break
                slots[s] = int(rng.choice(sorted(pool)))
            if len(slots) < len(slot_names) or (template, slots) in found:
                continue
            # The one-object relations hold by construction of the pools; "between" is checked here.
            if any(r == "between" for r, *_ in rels) and not description_holds(scene, template, slots, p, y, False)[0]:
                continue
            found.append((template, slots))
    return found


def _sample_pose(scene: Scene, grid, grid_distance, targets_xy, rng) -> tuple[np.ndarray, float] | None:
    """A free position within reach of a random anchor object (a free-space grid point [P, 2], jittered when
    that stays free; grid_distance [P, B] to the objects), facing one of targets_xy [n, 2] (mostly) or a
    random way."""
    anchor = rng.integers(len(scene.objects))
    reach = grid_distance[:, anchor]
    candidates = np.flatnonzero((reach >= ANCHOR_REACH_M[0]) & (reach <= ANCHOR_REACH_M[1]))
    if candidates.size == 0:
        return None
    position = grid[rng.choice(candidates)]
    jittered = position + rng.uniform(-GRID_M / 2, GRID_M / 2, 2)
    if scene.clearance_m(jittered[None])[0] >= FREE_M:
        position = jittered
    if rng.random() < 0.85 and len(targets_xy):
        target = targets_xy[rng.integers(len(targets_xy))]
        yaw = geometry.yaw_of_direction(target - position) + rng.normal(0.0, np.radians(7))
    else:
        yaw = rng.uniform(-np.pi, np.pi)
    return position, float(geometry.wrap_angle(yaw))


def sample_situation(scene: Scene, grid, rng, attempts: int = 200) -> dict | None:
    """A situation record: pose, template, slots, text and alternative descriptions (None if none found)."""
    names = language.object_names(scene)
    grid_distance = relations.object_distance(scene, grid)  # [P, B]
    targets = np.array([o.center[:2] for o in scene.objects if names[o.id] is not None]).reshape(-1, 2)
    for _ in range(attempts):
        pose = _sample_pose(scene, grid, grid_distance, targets, rng)
        if pose is None:
            continue
        position, yaw = pose
        options = _descriptions(scene, names, position, yaw, rng)
        accepted = []
        for k in rng.permutation(len(options)):
            template, slots = options[k]
            if is_unambiguous(scene, grid, template, slots, position, yaw):
                accepted.append({"template": template, "objects": slots,
                                 "text": language.situation_text(template, {s: names[i] for s, i in slots.items()})})
            if len(accepted) > MAX_ALTERNATIVES:
                break
        if accepted:
            return {"position": position.tolist(), "yaw": yaw, **accepted[0], "alternatives": accepted[1:]}
    return None


def sample_basic_situation(scene: Scene, rng, attempts: int = 200) -> dict | None:
    """A situation record of a basic room (module docstring): next to object a, facing object b."""
    names = language.object_names(scene)
    floor = [o for o in scene.objects if o.on_top_of is None]
    if len(floor) < 2:
        return None
    steps = np.linspace(0.0, 1.0, 101)
    for _ in range(attempts):
        a, b = (floor[i] for i in rng.choice(len(floor), 2, replace=False))
        direction = b.center[:2] - a.center[:2]
        along = a.center[:2] + steps[:, None] * direction  # [S, 2] from a's centre to b's
        index = {o.id: i for i, o in enumerate(scene.objects)}
        to_a = relations.object_distance(scene, along)[:, index[a.id]]
        reach = rng.uniform(*BASIC_REACH_M)
        beyond = np.flatnonzero(to_a >= reach)
        if beyond.size == 0:
            continue
        normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
        position = along[beyond[0]] + normal * np.clip(rng.normal(0.0, BASIC_LATERAL_M), -0.3, 0.3)
        if scene.clearance_m(position[None])[0] < FREE_M:
            continue
        if relations.object_distance(scene, position)[0, index[b.id]] < BASIC_MIN_GAP_M:
            continue
        yaw = float(geometry.wrap_angle(geometry.yaw_of_direction(b.center[:2] - position)
                                        + rng.normal(0.0, BASIC_YAW_STD_RAD)))
        slots = {"a": a.id, "b": b.id}
        phrasings = [str(t) for t in rng.permutation(BASIC_TEMPLATES)]
        if not description_holds(scene, phrasings[0], slots, position[None], np.array([yaw]), loose=False)[0]:
            continue
        described = [{"template": t, "objects": slots,
                      "text": language.situation_text(t, {k: names[i] for k, i in slots.items()})}
                     for t in phrasings[:1 + MAX_ALTERNATIVES]]
        return {"position": position.tolist(), "yaw": yaw, **described[0], "alternatives": described[1:]}
    return None


def _random_spec(kind: str, scene: Scene, names, bearing: np.ndarray, rng) -> dict | None:
    """A random question of type `kind` (not yet checked for a clear answer); bearing [B]: every object's from the
    speaker (language.view)."""
    nameable = [i for i, n in names.items() if n is not None]
    if len(nameable) < (2 if kind == "closer" else 1) and kind in ("navigation", "left_right", "distance", "closer"):
        return None
    spec = {"type": kind, "form": int(rng.integers(len(language.QUESTION_FORMS[kind])))}
    if kind == "direction":
        spec["sector"] = str(rng.choice(list(relations.SECTOR_CENTER)))
    elif kind in ("navigation", "left_right", "distance"):
        spec["objects"] = [int(rng.choice(nameable))]
    elif kind == "closer":
        a, b = (int(i) for i in rng.choice(nameable, 2, replace=False))
        spec["objects"] = [a, b]
    elif kind == "color":  # an object's category, asked about in the sector it is in
        o = scene.objects[rng.integers(len(scene.objects))]
        seen_at = bearing[scene.objects.index(o)]
        spec["category"] = o.category
        spec["sector"] = min(relations.SECTOR_CENTER, key=lambda s: relations.sector_offset(seen_at, s))
    elif kind == "existence":  # yes or no with equal chance
        present = sorted({o.category for o in scene.objects})
        spec["category"] = str(rng.choice(present if rng.random() < 0.5 else
                                          [c for c in CATEGORIES if c not in present]))
    elif kind == "count":
        spec["category"] = str(rng.choice(sorted({o.category for o in scene.objects})))
    elif kind == "color_unique":
        cats = [o.category for o in scene.objects]
        spec["category"] = str(rng.choice(sorted(c for c in set(cats) if cats.count(c) == 1) or cats))
    return spec


def _question(scene: Scene, names, kind: str, position_xy, yaw_rad: float, rng, tries: int = 6,
              seen: tuple | None = None) -> dict | None:
    """A question record of type `kind` with a clear answer at the pose, or None after `tries` draws (seen:
    language.view at the pose, made here if not given)."""
    seen = seen or language.view(scene, position_xy, yaw_rad)
    for _ in range(tries):
        spec = _random_spec(kind, scene, names, seen[0], rng)
        if spec is None:
            return None
        ans = language.answer(scene, spec, position_xy, yaw_rad, seen)
        if ans is not None:
            return {"spec": spec, "question": language.question_text(scene, spec), "answer": ans,
                    "question_type": kind, "answer_type": language.answer_type(spec)}
    return None


def relation_questions(scene: Scene, names, situation: dict, k: int, rng, asked: set) -> list[dict]:
    """Up to k more questions of a situation whose answers need its pose and the room's layout together
    (RELATION_KINDS in turn), each kind about objects not yet asked of it (asked: (kind, objects) pairs)."""
    out, asked = [], set(asked)
    position = np.array(situation["position"])
    seen = language.view(scene, position, situation["yaw"])
    for kind in [RELATION_KINDS[i % len(RELATION_KINDS)] for i in range(4 * k)]:
        if len(out) == k:
            break
        q = _question(scene, names, kind, position, situation["yaw"], rng, seen=seen)
        if q is None or (kind, tuple(q["spec"]["objects"])) in asked:
            continue
        asked.add((kind, tuple(q["spec"]["objects"])))
        out.append({"situation_id": situation["id"], "position": situation["position"], "yaw": situation["yaw"], **q})
    return out


def describe_scene(scene: Scene, rng: np.random.Generator, relations_per_situation: int = 0) -> tuple[list[dict],
                                                                                                   list[dict]]:
    """Situations and questions of a scene (its frame). Question records carry their pose and situation id
    (None for non-situated ones); ids are assigned by the caller. relations_per_situation: that many more questions
    per situation (relation_questions), drawn after all others so that the rest is the same as without them."""
    grid = free_grid(scene)
    names = language.object_names(scene)
    situations, questions = [], []
    if len(grid) == 0:  # no free floor at all: nowhere to stand
        return situations, questions
    basic = scene.style == "basic"
    per_situation = BASIC_QUESTIONS_PER_SITUATION if basic else QUESTIONS_PER_SITUATION
    for _ in range(BASIC_SITUATIONS_PER_SCENE if basic else SITUATIONS_PER_SCENE):
        s = sample_basic_situation(scene, rng) if basic else sample_situation(scene, grid, rng)
        if s is None:
            continue
        s = {"id": len(situations), **s}
        situations.append(s)
        asked, position = 0, np.array(s["position"])
        seen = language.view(scene, position, s["yaw"])
        for kind in rng.permutation(language.SITUATED_TYPES):
            q = _question(scene, names, str(kind), position, s["yaw"], rng, seen=seen)
            if q is not None:
                questions.append({"situation_id": s["id"], "position": s["position"], "yaw": s["yaw"], **q})
                asked += 1
            if asked == per_situation:
                break
    for kind in NON_SITUATED_KINDS:
        position = grid[rng.integers(len(grid))]
        yaw = float(rng.uniform(-np.pi, np.pi))
        q = _question(scene, names, kind, position, yaw, rng)
        if q is not None:
            questions.append({"situation_id": None, "position": position.tolist(), "yaw": yaw, **q})
    for s in situations if relations_per_situation else []:
        asked = {(q["question_type"], tuple(q["spec"].get("objects", ()))) for q in questions
                 if q["situation_id"] == s["id"]}
        questions += relation_questions(scene, names, s, relations_per_situation, rng, asked)
    return situations, questions
