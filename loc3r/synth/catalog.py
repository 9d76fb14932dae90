"""What a synthetic room may contain: object categories with typical sizes, colours and shapes, room types.

An object is an oriented box (its bounding box: centre, size along its local axes, yaw) drawn as a union of
1-3 boxes ("parts"). Local axes: x = width, y = depth with the object's front (the side one sits on or looks
at) towards local +y, z = up. Sizes are metres; colours are named (the names are the answers of colour
questions) and map to sRGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Named colours of objects (sRGB 0-255). Every name is a one-word answer of "What color is ...?".
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (185, 45, 40),
    "blue": (45, 85, 190),
    "green": (55, 140, 60),
    "brown": (120, 78, 45),
    "white": (232, 232, 226),
    "black": (38, 38, 42),
    "gray": (128, 128, 132),
    "yellow": (228, 192, 48),
    "orange": (228, 122, 40),
    "purple": (118, 62, 152),
    "pink": (228, 138, 168),
}


Size = tuple[float, float, float]  # (sx, sy, sz) metres along an object's local axes


@dataclass(frozen=True)
class Category:
    name: str  # singular, as used in the text ("trash can")
    plural: str  # as used in counting questions ("trash cans")
    colors: tuple[str, ...]  # the colours it comes in
    shape: str  # part layout: box, bed, seat, sofa, table, desk, lamp, plant, toilet
    floor: str | None  # how it stands on the floor: "wall" (back against a wall), "free", or None (never)
    floor_size: tuple[Size, Size] | None  # (min, max) size standing on the floor
    top_size: tuple[Size, Size] | None = None  # (min, max) size standing on a support
    support: bool = False  # whether other objects may stand on it
    max_count: int = 1  # most instances in one room


CATEGORIES: dict[str, Category] = {c.name: c for c in [
    Category("bed", "beds", ("white", "blue", "gray", "red", "brown", "green"), "bed", "wall",
             ((1.3, 1.9, 0.8), (1.9, 2.2, 1.1))),
    Category("chair", "chairs", ("brown", "black", "red", "blue", "white", "gray", "green", "yellow"), "seat", "free",
             ((0.42, 0.42, 0.8), (0.52, 0.52, 0.98)), max_count=6),
    Category("table", "tables", ("brown", "white", "black", "gray"), "table", "free",
             ((0.8, 0.7, 0.72), (1.8, 1.0, 0.78)), support=True),
    Category("sofa", "sofas", ("gray", "blue", "red", "green", "brown", "black", "yellow"), "sofa", "wall",
             ((1.6, 0.8, 0.78), (2.4, 1.0, 0.92))),
    Category("desk", "desks", ("brown", "white", "black", "gray"), "desk", "wall",
             ((1.0, 0.55, 0.72), (1.6, 0.8, 0.77)), support=True),
    Category("cabinet", "cabinets", ("brown", "white", "gray", "black"), "box", "wall",
             ((0.6, 0.4, 0.8), (1.2, 0.6, 1.9)), support=True, max_count=2),
    Category("lamp", "lamps", ("white", "yellow", "black", "red"), "lamp", "free",
             ((0.3, 0.3, 1.3), (0.42, 0.42, 1.7)), top_size=((0.18, 0.18, 0.35), (0.28, 0.28, 0.55)), max_count=2),
    Category("plant", "plants", ("green",), "plant", "free",
             ((0.3, 0.3, 0.5), (0.6, 0.6, 1.4)), top_size=((0.15, 0.15, 0.25), (0.25, 0.25, 0.4)), max_count=2),
    Category("tv", "tvs", ("black", "gray"), "box", None, None, top_size=((0.8, 0.08, 0.5), (1.3, 0.14, 0.8))),
    Category("bookshelf", "bookshelves", ("brown", "white", "black"), "box", "wall",
             ((0.6, 0.28, 1.5), (1.2, 0.4, 2.0)), max_count=2),
    Category("trash can", "trash cans", ("gray", "black", "blue", "green", "white"), "box", "free",
             ((0.25, 0.25, 0.3), (0.4, 0.4, 0.6)), max_count=2),
    Category("toilet", "toilets", ("white",), "toilet", "wall", ((0.38, 0.6, 0.72), (0.45, 0.72, 0.82))),
    Category("sink", "sinks", ("white", "gray"), "box", "wall", ((0.5, 0.42, 0.82), (0.9, 0.55, 0.9))),
    Category("refrigerator", "refrigerators", ("white", "gray", "black"), "box", "wall",
             ((0.6, 0.6, 1.6), (0.9, 0.75, 1.9))),
    Category("nightstand", "nightstands", ("brown", "white", "black"), "box", "wall",
             ((0.4, 0.35, 0.5), (0.55, 0.45, 0.65)), support=True, max_count=2),
    Category("dresser", "dressers", ("brown", "white", "gray"), "box", "wall",
             ((0.8, 0.45, 0.8), (1.5, 0.55, 1.2)), support=True),
    Category("armchair", "armchairs", ("red", "blue", "green", "brown", "gray", "yellow", "black"), "sofa", "free",
             ((0.7, 0.7, 0.8), (0.9, 0.9, 1.0)), max_count=2),
]}

# Room types (ScanNet's sceneType names): categories always present, then weights of the optional ones.
ROOM_TYPES: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "Bedroom / Hotel": (("bed",), {"nightstand": 3, "dresser": 2, "lamp": 2, "cabinet": 1, "chair": 1, "desk": 1,
                                   "plant": 1, "bookshelf": 1, "trash can": 1, "armchair": 1}),
    "Living room / Lounge": (("sofa",), {"armchair": 2, "table": 2, "bookshelf": 2, "plant": 2, "lamp": 2,
                                         "cabinet": 1, "chair": 1, "dresser": 1, "trash can": 1}),
    "Kitchen": (("refrigerator", "table"), {"chair": 4, "sink": 2, "cabinet": 2, "trash can": 2, "plant": 1,
                                            "lamp": 1}),
    "Bathroom": (("toilet", "sink"), {"cabinet": 2, "trash can": 2, "plant": 1, "lamp": 1, "dresser": 1}),
    "Office": (("desk", "chair"), {"bookshelf": 2, "cabinet": 2, "chair": 3, "plant": 1, "lamp": 1, "trash can": 2,
                                   "table": 1, "sofa": 1}),
}

# What may stand on what (categories with a top_size on categories with support=True).
TOP_SUPPORTS: dict[str, tuple[str, ...]] = {
    "tv": ("dresser", "table", "desk", "cabinet"),
    "lamp": ("nightstand", "desk", "dresser", "table"),
    "plant": ("table", "desk", "dresser", "nightstand", "cabinet"),
}

# Room surfaces (sRGB): muted floor and wall palettes; doors and windows.
FLOOR_RGB = [(150, 110, 75), (175, 140, 100), (120, 90, 65), (160, 160, 155), (185, 175, 150), (105, 105, 110)]
WALL_RGB = [(225, 222, 210), (210, 215, 222), (225, 210, 195), (200, 215, 200), (230, 225, 230), (215, 205, 215)]
CEILING_RGB = (238, 238, 235)
DOOR_RGB = [(140, 95, 60), (205, 200, 190), (95, 70, 50)]
WINDOW_RGB = (165, 205, 235)


@dataclass(frozen=True)
class Part:
    """One box of an object, in the object's local frame."""

    center: tuple[float, float, float]  # offset from the object's bounding-box centre, metres
    size: tuple[float, float, float]  # extents along the object's local axes, metres
    rgb: tuple[int, int, int]


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(c * factor), 0, 255)) for c in rgb)


def object_parts(shape: str, size, rgb) -> list[Part]:
    """The boxes that draw an object of bounding-box `size` (sx, sy, sz) and main colour `rgb`."""
    sx, sy, sz = (float(v) for v in size)
    x0, y0, z0 = -sx / 2, -sy / 2, -sz / 2  # bounding-box minimum corner (local)

    def box(xmin, ymin, zmin, dx, dy, dz, color=rgb):
        return Part((x0 + xmin + dx / 2, y0 + ymin + dy / 2, z0 + zmin + dz / 2), (dx, dy, dz), tuple(color))

    if shape == "bed":  # mattress and a headboard at the back (-y)
        return [box(0, 0.08, 0, sx, sy - 0.08, 0.5), box(0, 0, 0, sx, 0.08, sz, _shade(rgb, 0.7))]
    if shape == "seat":  # chair: seat block and a thin backrest
        return [box(0, 0.06, 0, sx, sy - 0.06, 0.46), box(0, 0, 0, sx, 0.06, sz)]
    if shape == "sofa":  # sofa / armchair: seat block and a thick back
        return [box(0, 0.2, 0, sx, sy - 0.2, 0.45), box(0, 0, 0, sx, 0.2, sz, _shade(rgb, 0.85))]
    if shape == "table":  # top slab on a central pedestal
        return [box(0, 0, sz - 0.05, sx, sy, 0.05), box(sx / 2 - 0.1, sy / 2 - 0.1, 0, 0.2, 0.2, sz - 0.05)]
    if shape == "desk":  # top slab on two side panels
        return [box(0, 0, sz - 0.04, sx, sy, 0.04), box(0, 0, 0, 0.04, sy, sz - 0.04),
                box(sx - 0.04, 0, 0, 0.04, sy, sz - 0.04)]
    if shape == "lamp":  # stand and a shade of the lamp's colour
        shade_h = 0.3 * sz
        return [box(sx / 2 - 0.03, sy / 2 - 0.03, 0, 0.06, 0.06, sz - shade_h, (60, 60, 60)),
                box(0, 0, sz - shade_h, sx, sy, shade_h)]
    if shape == "plant":  # terracotta pot and foliage
        pot_h = 0.35 * sz
        return [box(sx * 0.2, sy * 0.2, 0, sx * 0.6, sy * 0.6, pot_h, (170, 90, 55)),
                box(0, 0, pot_h, sx, sy, sz - pot_h)]
    if shape == "toilet":  # bowl and a tank at the back
        return [box(0.04, 0.2, 0, sx - 0.08, sy - 0.2, 0.42), box(0, 0, 0, sx, 0.2, sz)]
    return [box(0, 0, 0, sx, sy, sz)]
