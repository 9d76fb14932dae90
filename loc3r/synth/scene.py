"""A synthetic room: its outline, walls with doors and windows, and furniture; random sampling and JSON.

A `Scene` lives in one world frame (metres, +z up, floor at z = 0). `sample_scene` builds it in the room's
axis-aligned frame (outline edges along x and y); `Scene.transformed` moves it rigidly (rotation about z and a
translation), which is how the writer produces the ScanNet-like raw frame.

- Room: a rectangle of 3-9 m, or an L (a rectangle with one corner cut out), listed counter-clockwise; walls
  are its edges (wall k runs from vertex k to vertex k+1), floor at z = 0, ceiling at `height_m`.
- Openings: doors and windows, coloured rectangles on a wall, placed by distance along the wall.
- Objects: oriented boxes (catalog.py), standing on the floor without overlapping each other, doors' swing
  areas or walls; a few (tv, small lamps and plants) stand on top of a table, desk, dresser, nightstand or
  low cabinet (`on_top_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from loc3r import geometry
from loc3r.synth import shapes
from loc3r.synth.catalog import (CATEGORIES, CEILING_RGB, COLOR_RGB, DOOR_RGB, FLOOR_RGB, ROOM_TYPES, TOP_SUPPORTS,
                                 WALL_RGB, WINDOW_RGB, Part, object_parts)

MIN_OBJECTS, MAX_OBJECTS = 4, 12
ROOM_SIDE_M = (3.0, 9.0)
# Room styles. "basic" (the default of `loc3r synth`, what the tiny model learns from on a CPU): a rectangular
# room of BASIC_SIDE_M with BASIC_OBJECTS pieces of large floor furniture, each of its own category and of its
# own vivid colour, so that every object is named by a colour and a category that no other object of the room
# shares ("the red bed"). "realistic": rooms of 3-9 m, some L-shaped, 4-12 objects including small ones and
# objects on top of others, colours as the catalog's categories come in, repeated categories and colours.
STYLES = ("basic", "realistic")
BASIC_SIDE_M = (3.5, 6.0)
BASIC_OBJECTS = (4, 6)
BASIC_COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "pink")
BASIC_CATEGORIES = ("bed", "table", "sofa", "desk", "cabinet", "bookshelf", "refrigerator", "dresser", "armchair",
                    "sink", "toilet", "chair")
MAX_SUPPORT_HEIGHT_M = 1.2  # nothing is put on top of taller furniture


@dataclass
class Opening:
    """A door or window: a coloured rectangle on wall `wall`."""

    kind: str  # "door" or "window"
    wall: int  # index of the outline edge it is on
    offset_m: float  # distance from the wall's first vertex to the opening's near edge, along the wall
    width_m: float
    bottom_m: float  # height of its lower edge above the floor
    height_m: float
    rgb: tuple[int, int, int]


@dataclass
class Room:
    outline_xy: np.ndarray  # [V, 2] counter-clockwise polygon, metres
    height_m: float  # ceiling height
    floor_rgb: tuple[int, int, int]
    wall_rgb: tuple[int, int, int]
    openings: list[Opening] = field(default_factory=list)
    ceiling_rgb: tuple[int, int, int] = CEILING_RGB


@dataclass
class SceneObject:
    id: int
    category: str  # a key of catalog.CATEGORIES
    color: str  # a key of catalog.COLOR_RGB
    center: np.ndarray  # [3] bounding-box centre, metres
    size: np.ndarray  # [3] extents along the local axes (x width, y depth with the front at +y, z height)
    yaw: float  # rad, turns local +x into the frame's axes (CCW from +x)
    on_top_of: int | None = None  # id of the object it stands on, None when on the floor

    @property
    def parts(self) -> list[Part]:
        """The boxes that draw the object, in its local frame."""
        return object_parts(CATEGORIES[self.category].shape, self.size, COLOR_RGB[self.color])

    def world_parts(self) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int, int]]]:
        """The parts as (centre [3] in the scene's frame, size [3] along the object's axes, rgb)."""
        return [(self.center + np.append(shapes.rotate_xy(p.center[:2], self.yaw), p.center[2]),
                 np.asarray(p.size, np.float64), p.rgb) for p in self.parts]


@dataclass
class Scene:
    scene_id: str
    scene_type: str  # a key of catalog.ROOM_TYPES (ScanNet's sceneType)
    room: Room
    objects: list[SceneObject]
    style: str = "realistic"  # a key of STYLES: how the room was furnished (and how its objects are named)

    def transformed(self, T) -> "Scene":
        """The same scene moved by a rigid 4x4 transform T that keeps z up (rotation about z + translation)."""
        T = np.asarray(T, np.float64)
        yaw_T = float(np.arctan2(T[1, 0], T[0, 0]))
        outline = geometry.transform_points(T, np.pad(self.room.outline_xy, ((0, 0), (0, 1))))[:, :2]
        objects = [replace(o, center=geometry.transform_points(T, o.center),
                           yaw=float(geometry.wrap_angle(o.yaw + yaw_T))) for o in self.objects]
        return replace(self, room=replace(self.room, outline_xy=outline), objects=objects)

    def footprints(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Object footprints: centres [B, 2], half extents [B, 2], yaws [B]."""
        centers = np.array([o.center[:2] for o in self.objects]).reshape(-1, 2)
        halves = np.array([o.size[:2] / 2 for o in self.objects]).reshape(-1, 2)
        return centers, halves, np.array([o.yaw for o in self.objects])

    def clearance_m(self, points_xy) -> np.ndarray:
        """[N] free distance around points [N, 2]: to the nearest wall or object footprint (< 0 inside one)."""
        d = shapes.wall_distance(points_xy, self.room.outline_xy)
        if self.objects:
            d = np.minimum(d, shapes.footprint_distance(points_xy, *self.footprints()).min(-1))
        return d

    def to_json(self) -> dict:
        room = self.room
        return {
            "scene_id": self.scene_id,
            "scene_type": self.scene_type,
            "style": self.style,
            "room": {
                "outline_xy": room.outline_xy.tolist(),
                "height_m": room.height_m,
                "floor_rgb": list(room.floor_rgb),
                "wall_rgb": list(room.wall_rgb),
                "ceiling_rgb": list(room.ceiling_rgb),
                "openings": [{"kind": o.kind, "wall": o.wall, "offset_m": o.offset_m, "width_m": o.width_m,
                              "bottom_m": o.bottom_m, "height_m": o.height_m, "rgb": list(o.rgb)}
                             for o in room.openings],
            },
            "objects": [{"id": o.id, "category": o.category, "color": o.color, "center": o.center.tolist(),
                         "size": o.size.tolist(), "yaw": o.yaw, "on_top_of": o.on_top_of} for o in self.objects],
        }

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        r = d["room"]
        room = Room(np.array(r["outline_xy"], np.float64), r["height_m"], tuple(r["floor_rgb"]), tuple(r["wall_rgb"]),
                    [Opening(o["kind"], o["wall"], o["offset_m"], o["width_m"], o["bottom_m"], o["height_m"],
                             tuple(o["rgb"])) for o in r["openings"]], tuple(r["ceiling_rgb"]))
        objects = [SceneObject(o["id"], o["category"], o["color"], np.array(o["center"], np.float64),
                               np.array(o["size"], np.float64), o["yaw"], o["on_top_of"]) for o in d["objects"]]
        return cls(d["scene_id"], d["scene_type"], room, objects, d.get("style", "realistic"))


# ---------------------------------------------------------------------------------------------------------
# Sampling (in the room's axis-aligned frame)
# ---------------------------------------------------------------------------------------------------------

def sample_scene(rng: np.random.Generator, scene_id: str, style: str = "realistic") -> Scene:
    """A random furnished room in its axis-aligned frame, of a style of STYLES (see there)."""
    if style == "basic":
        return _sample_basic_scene(rng, scene_id)
    room_type = str(rng.choice(list(ROOM_TYPES)))
    while True:  # redraw the room until its furniture fits (the type stays: every type stays as likely)
        room = _sample_room(rng)
        objects = _place_objects(rng, room, room_type)
        if len(objects) >= MIN_OBJECTS:
            return Scene(scene_id, room_type, room, objects)


def _sample_basic_scene(rng, scene_id: str) -> Scene:
    """A "basic" room: BASIC_OBJECTS floor objects of distinct BASIC_CATEGORIES and distinct BASIC_COLORS."""
    while True:
        room = _sample_room(rng, BASIC_SIDE_M, allow_l_shape=False)
        n = int(rng.integers(BASIC_OBJECTS[0], BASIC_OBJECTS[1] + 1))
        categories = [str(c) for c in rng.choice(BASIC_CATEGORIES, n, replace=False)]
        categories.sort(key=lambda c: -np.prod(CATEGORIES[c].floor_size[1][:2]))  # big furniture first
        colors = [str(c) for c in rng.choice(BASIC_COLORS, n, replace=False)]
        keepouts, objects = _door_keepouts(room), []
        for name, color in zip(categories, colors):
            placed = _place_on_floor(rng, room, name, objects, keepouts)
            if placed is not None:
                objects.append(replace(placed, color=color))
        if len(objects) >= BASIC_OBJECTS[0]:
            room_type = next((t for t, (required, _) in ROOM_TYPES.items() if set(required) <= set(categories)),
                             "Living room / Lounge")
            return Scene(scene_id, room_type, room, objects, "basic")


def _sample_room(rng, side_m=ROOM_SIDE_M, allow_l_shape: bool = True) -> Room:
    w, d = (float(v) for v in np.round(rng.uniform(*side_m, 2), 2))
    outline = np.array([[0, 0], [w, 0], [w, d], [0, d]], np.float64)
    # L shape: cut out the (+x, +y) corner, arms >= 2.25 m wide
    if allow_l_shape and min(w, d) >= 4.5 and rng.random() < 0.35:
        nw, nd = (float(v) for v in np.round(rng.uniform(0.3, 0.5, 2) * [w, d], 2))
        outline = np.array([[0, 0], [w, 0], [w, d - nd], [w - nw, d - nd], [w - nw, d], [0, d]], np.float64)
        if rng.random() < 0.5:  # mirror to put the cut at another corner (reversing keeps it counter-clockwise)
            outline = np.array([w, 0.0]) + outline * [-1, 1]
            outline = outline[::-1]
        if rng.random() < 0.5:
            outline = np.array([0.0, d]) + outline * [1, -1]
            outline = outline[::-1]
    room = Room(outline, float(np.round(rng.uniform(2.5, 3.0), 2)),
                FLOOR_RGB[rng.integers(len(FLOOR_RGB))], WALL_RGB[rng.integers(len(WALL_RGB))])
    _add_openings(rng, room, "door", 1 + int(rng.random() < 0.3))
    _add_openings(rng, room, "window", int(rng.integers(0, 4)))
    return room


def _add_openings(rng, room: Room, kind: str, count: int) -> None:
    a, b = shapes.polygon_edges(room.outline_xy)
    lengths = np.linalg.norm(b - a, axis=-1)
    for _ in range(count):
        for _attempt in range(20):
            if kind == "door":
                width, bottom, height = rng.uniform(0.8, 1.0), 0.0, rng.uniform(2.0, 2.15)
                rgb = DOOR_RGB[rng.integers(len(DOOR_RGB))]
            else:
                width, bottom = rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0)
                height, rgb = min(rng.uniform(1.0, 1.3), room.height_m - 0.2 - bottom), WINDOW_RGB
            wall = int(rng.integers(len(lengths)))
            if lengths[wall] < width + 0.4:
                continue
            offset = rng.uniform(0.2, lengths[wall] - width - 0.2)
            if all(o.wall != wall or offset > o.offset_m + o.width_m + 0.2 or offset + width < o.offset_m - 0.2
                   for o in room.openings):
                room.openings.append(Opening(kind, wall, float(offset), float(width), float(bottom), float(height),
                                             rgb))
                break


def _door_keepouts(room: Room) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Footprints (centre, half, yaw) of the floor in front of each door, kept free of furniture."""
    a, b = shapes.polygon_edges(room.outline_xy)
    out = []
    for o in room.openings:
        if o.kind != "door":
            continue
        e = (b[o.wall] - a[o.wall]) / np.linalg.norm(b[o.wall] - a[o.wall])
        inward = shapes.rotate_xy(e, np.pi / 2)
        centre = a[o.wall] + e * (o.offset_m + o.width_m / 2) + inward * 0.45
        out.append((centre, np.array([o.width_m / 2 + 0.1, 0.45]), float(np.arctan2(e[1], e[0]))))
    return out


def _choose_floor_categories(rng, room_type: str, n_floor: int) -> list[str]:
    """The room type's required categories, then weighted draws of its optional ones (up to max_count each)."""
    required, weights = ROOM_TYPES[room_type]
    chosen = list(required)
    names = list(weights)
    while len(chosen) < n_floor:
        allowed = [n for n in names if chosen.count(n) < CATEGORIES[n].max_count]
        if not allowed:
            break
        p = np.array([weights[n] for n in allowed], np.float64)
        chosen.append(str(rng.choice(allowed, p=p / p.sum())))
    return chosen


def _random_size(rng, size_range) -> np.ndarray:
    """[3] size uniform between (min, max), rounded to centimetres."""
    lo, hi = np.asarray(size_range[0]), np.asarray(size_range[1])
    return np.round(rng.uniform(lo, hi), 2)


def _place_objects(rng, room: Room, room_type: str) -> list[SceneObject]:
    """Furniture for a room: about one object per 3 m^2 (MIN_OBJECTS..MAX_OBJECTS), 0-3 of them on top of others.
    Optional objects that find no place are left out; [] if a required one finds none."""
    area, _ = shapes.polygon_area_centroid(room.outline_xy)
    n_total = int(np.clip(round(area / 3.0 + rng.normal(0.0, 1.0)), MIN_OBJECTS, MAX_OBJECTS))
    n_top = int(min(rng.integers(0, 4), n_total - MIN_OBJECTS + 1))
    categories = _choose_floor_categories(rng, room_type, n_total - n_top)
    # Required categories first, then the larger objects, so that big furniture finds room.
    big_first = sorted(categories[len(ROOM_TYPES[room_type][0]):],
                       key=lambda n: -np.prod(CATEGORIES[n].floor_size[1][:2]))
    keepouts = _door_keepouts(room)
    objects: list[SceneObject] = []
    required = ROOM_TYPES[room_type][0]
    for name in list(required) + big_first:
        placed = _place_on_floor(rng, room, name, objects, keepouts)
        if placed is not None:
            objects.append(placed)
        elif name in required:  # a bedroom without a bed: the caller draws another room
            return []
    for _ in range(n_top):
        if len(objects) >= MAX_OBJECTS:
            break
        placed = _place_on_top(rng, objects)
        if placed is not None:
            objects.append(placed)
    return objects


def _place_on_floor(rng, room: Room, name: str, objects, keepouts, attempts: int = 40) -> SceneObject | None:
    """An object of category `name` on the floor, inside the room and clear of `objects` and the door
    keep-out footprints; None when `attempts` random placements all collide."""
    cat = CATEGORIES[name]
    a, b = shapes.polygon_edges(room.outline_xy)
    lengths = np.linalg.norm(b - a, axis=-1)
    tables = [o for o in objects if o.category in ("table", "desk")]
    for _ in range(attempts):
        size = _random_size(rng, cat.floor_size)
        half = size[:2] / 2
        if name == "chair" and tables and rng.random() < 0.7:  # pulled up to a table or desk, facing it
            t = tables[rng.integers(len(tables))]
            side = 0 if t.category == "desk" else int(rng.integers(4))  # a desk is against a wall: its front
            direction = shapes.rotate_xy([0.0, 1.0], t.yaw + side * np.pi / 2)  # world direction from the table
            reach = (t.size[1] if side % 2 == 0 else t.size[0]) / 2 + half[1] + 0.06
            lateral = shapes.rotate_xy(direction, np.pi / 2) * rng.uniform(-0.3, 0.3)
            center = t.center[:2] + direction * reach + lateral
            yaw = float(np.arctan2(-direction[1], -direction[0]) - np.pi / 2)
        elif cat.floor == "wall":  # back against a wall, front (+y) towards the room
            ok = np.flatnonzero(lengths >= size[0] + 0.1)
            if ok.size == 0:
                continue
            wall = int(rng.choice(ok, p=lengths[ok] / lengths[ok].sum()))
            e = (b[wall] - a[wall]) / lengths[wall]
            inward = shapes.rotate_xy(e, np.pi / 2)
            along = rng.uniform(half[0] + 0.02, lengths[wall] - half[0] - 0.02)
            center = a[wall] + e * along + inward * (half[1] + 0.03)
            yaw = float(np.arctan2(inward[1], inward[0]) - np.pi / 2)
        else:
            lo, hi = room.outline_xy.min(0), room.outline_xy.max(0)
            center = rng.uniform(lo, hi)
            yaw = float(rng.integers(4) * np.pi / 2 + (rng.uniform(-0.5, 0.5) if rng.random() < 0.4 else 0.0))
        yaw = float(geometry.wrap_angle(yaw))
        if not shapes.footprint_inside_polygon(center, half, yaw, room.outline_xy, margin_m=0.01):
            continue
        others = [(o.center[:2], o.size[:2] / 2 + 0.03, o.yaw) for o in objects if o.on_top_of is None] + keepouts
        if any(shapes.footprints_overlap(center, half + 0.03, yaw, *other) for other in others):
            continue
        return SceneObject(len(objects), name, str(rng.choice(cat.colors)),
                           np.array([center[0], center[1], size[2] / 2]), size, yaw)
    return None


def _place_on_top(rng, objects, attempts: int = 20) -> SceneObject | None:
    """A tv, small lamp or small plant standing on a low support among `objects`, clear of what is already on it."""
    for _ in range(attempts):
        name = str(rng.choice(list(TOP_SUPPORTS)))
        cat = CATEGORIES[name]
        if sum(o.category == name for o in objects) >= cat.max_count:
            continue
        supports = [o for o in objects if o.on_top_of is None and o.category in TOP_SUPPORTS[name]
                    and o.size[2] <= MAX_SUPPORT_HEIGHT_M]
        if not supports:
            continue
        s = supports[rng.integers(len(supports))]
        size = _random_size(rng, cat.top_size)
        room_xy = s.size[:2] / 2 - size[:2] / 2 - 0.03  # how far the centre may move on the support's top
        if (room_xy < 0).any():
            continue
        local = rng.uniform(-room_xy, room_xy)
        if name == "tv":  # at the back, facing the support's front
            local[1] = -room_xy[1]
        center = s.center[:2] + shapes.rotate_xy(local, s.yaw)
        neighbours = [o for o in objects if o.on_top_of == s.id]
        if any(shapes.footprints_overlap(center, size[:2] / 2 + 0.02, s.yaw, o.center[:2], o.size[:2] / 2, o.yaw)
               for o in neighbours):
            continue
        z = s.size[2] + size[2] / 2
        return SceneObject(len(objects), name, str(rng.choice(cat.colors)), np.array([center[0], center[1], z]),
                           size, s.yaw, on_top_of=s.id)
    return None
