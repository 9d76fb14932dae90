"""The words of the synthetic rooms: object names, situation and question templates, answers, vocabulary.

- Names: an object is called by its category when that category is unique in the room ("the bed"), else by
  colour + category when that pair is unique ("the blue chair"); otherwise it is never named.
- A situation is a template plus the objects filling its slots; its relations (relations.py) hold at the
  speaker's pose. A question is a *spec* (a small dict: {"type": ..., parameters}) rendered to text by
  `question_text`, and `answer` derives its answer from the scene and the pose alone: the generator and the
  tests call the same function. `answer` returns None when the geometry is too close to a decision boundary
  (an object near a sector edge, two distances within a margin), so asked questions have clear answers.
- Answers are short and lower-case like SQA3D's: a category, a colour, yes / no, a number word,
  "two meters", left / right / forward / backward.
- Specs (every one also has "form", the index of its phrasing in QUESTION_FORMS):
  situated: direction {sector} "what is on my left", navigation {objects: [id]}, left_right {objects: [id]},
  nearest {}, closer {objects: [a, b]}, distance {objects: [id]}, color {category, sector};
  non-situated: existence {category}, count {category}, color_unique {category}.
  Sectors: front / left / right / behind, 90 degrees each (relations.py). Distances are to footprints.
- `vocabulary()` lists every token any text or answer can contain, as split by `tokenize`.
"""

from __future__ import annotations

import re
import string

import numpy as np

from loc3r.constants import NO_SITUATION
from loc3r.synth.catalog import CATEGORIES, COLOR_RGB
from loc3r.synth.relations import SECTOR_HALF_WIDTH, object_distance, relative_bearing, sector_offset
from loc3r.synth.scene import Scene

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")

# Situation templates: text with slots, and the relations (relation, slots) the text asserts. Each one has a
# "facing" or two egocentric directions: a lone "next to X" or "X on my left" never pins the heading down.
SITUATION_TEMPLATES: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "near_facing": ("I am standing next to the {a}, facing the {b}.", (("near", "a"), ("facing", "b"))),
    "near_looking": ("I am next to the {a} and I am looking at the {b}.", (("near", "a"), ("facing", "b"))),
    "by_facing": ("I am standing by the {a} and the {b} is in front of me.", (("near", "a"), ("facing", "b"))),
    "front_behind": ("I am standing in front of the {a}, with the {b} behind me.",
                     (("near", "a"), ("facing", "a"), ("behind", "b"))),
    "front_left": ("I am standing in front of the {a} and the {b} is on my left.",
                   (("near", "a"), ("facing", "a"), ("left", "b"))),
    "front_right": ("I am standing in front of the {a} and the {b} is on my right.",
                    (("near", "a"), ("facing", "a"), ("right", "b"))),
    "between_facing": ("I am standing between the {a} and the {b}, facing the {c}.",
                       (("between", "a", "b"), ("facing", "c"))),
    "facing_left_right": ("I am facing the {a}, with the {b} on my left and the {c} on my right.",
                          (("facing", "a"), ("left", "b"), ("right", "c"))),
    "behind_facing": ("The {a} is behind me and I am facing the {b}.", (("behind", "a"), ("facing", "b"))),
}

# Question templates per spec type: phrasings ("form" picks one). {s} is a sector phrase, {a}/{b} object names,
# {c} a category, {p} its plural, {art} "a" / "an".
QUESTION_FORMS: dict[str, tuple[str, ...]] = {
    "direction": ("What is {s}?", "What object is {s}?"),
    "navigation": ("Which direction should I go if I want to reach the {a}?",
                   "Which way should I go to get to the {a}?"),
    "left_right": ("Is the {a} on my left or on my right?", "Is the {a} to my left or to my right?"),
    "nearest": ("What is the closest object to me?", "Which object is nearest to me?"),
    "closer": ("Which is closer to me, the {a} or the {b}?",),
    "distance": ("How far is the {a} from me?", "How far away from me is the {a}?"),
    "color": ("What color is the {c} {s}?", "What is the color of the {c} {s}?"),
    "color_unique": ("What color is the {c}?", "What is the color of the {c} in the room?"),
    "existence": ("Is there {art} {c} in the room?", "Is there {art} {c} in this room?"),
    "count": ("How many {p} are there in the room?", "How many {p} are in the room?"),
}
SECTOR_PHRASE = {"front": "in front of me", "left": "on my left", "right": "on my right", "behind": "behind me"}
NAVIGATION_ANSWER = {"front": "forward", "left": "left", "right": "right", "behind": "backward"}
SITUATED_TYPES = ("direction", "navigation", "left_right", "nearest", "closer", "distance", "color")
NON_SITUATED_TYPES = ("existence", "count", "color_unique")
ANSWER_TYPE = {"existence": "yes/no", "count": "number"}  # everything else is "other"

ANGLE_MARGIN_RAD = np.radians(10)  # answered objects lie this far inside their sector ...
DISTANCE_MARGIN_M = 0.3  # ... and this much nearer than any object that would give another answer
CLOSER_MARGIN_M = 0.5  # "which is closer": the two distances differ by at least this
LEFT_RIGHT_MIN_RAD = np.radians(20)  # "left or right": at least this far off the front-back line


def object_names(scene: Scene) -> dict[int, str | None]:
    """The name of every object id: its category if unique, else colour + category if unique, else None.
    In "basic" rooms (every colour and category unique) always colour + category: "the red bed"."""
    if scene.style == "basic":
        return {o.id: f"{o.color} {o.category}" for o in scene.objects}
    cats = [o.category for o in scene.objects]
    pairs = [(o.color, o.category) for o in scene.objects]
    names = {}
    for o in scene.objects:
        if cats.count(o.category) == 1:
            names[o.id] = o.category
        elif pairs.count((o.color, o.category)) == 1:
            names[o.id] = f"{o.color} {o.category}"
        else:
            names[o.id] = None
    return names


def situation_text(template: str, slot_names: dict[str, str]) -> str:
    """The text of a situation template with its slots filled by object names."""
    return SITUATION_TEMPLATES[template][0].format(**slot_names)


def question_text(scene: Scene, spec: dict) -> str:
    """The text of a question spec (its objects named as in object_names)."""
    names = object_names(scene)
    kind = spec["type"]
    fields = {}
    if "sector" in spec:
        fields["s"] = SECTOR_PHRASE[spec["sector"]]
    if "objects" in spec:
        fields.update(a=names[spec["objects"][0]], b=names[spec["objects"][-1]])
    if "category" in spec:
        c = spec["category"]
        fields.update(c=c, p=CATEGORIES[c].plural, art="an" if c[0] in "aeiou" else "a")
    return QUESTION_FORMS[kind][spec["form"]].format(**fields)


def _floor_indices(scene: Scene) -> np.ndarray:
    """Indices (into scene.objects) of the objects standing on the floor: the candidates of "what is ..."."""
    return np.array([i for i, o in enumerate(scene.objects) if o.on_top_of is None], np.int64)


def _nearest_category(scene: Scene, candidates, distance, blocking) -> str | None:
    """Category of the nearest candidate object, if no object of another category in `blocking` is within
    DISTANCE_MARGIN_M of it (indices into scene.objects; distance [B])."""
    if len(candidates) == 0:
        return None
    best = candidates[np.argmin(distance[candidates])]
    category = scene.objects[best].category
    rivals = [i for i in blocking if scene.objects[i].category != category]
    if rivals and distance[rivals].min() < distance[best] + DISTANCE_MARGIN_M:
        return None
    return category


def view(scene: Scene, position_xy, yaw_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """What the answers at a pose read: every object's bearing [B] (rad, its centre's) and distance [B] (m, to its
    footprint) from a speaker at position_xy [2] facing yaw_rad."""
    return relative_bearing(scene, position_xy, yaw_rad)[0], object_distance(scene, position_xy)[0]


def answer(scene: Scene, spec: dict, position_xy, yaw_rad: float,
           seen: tuple[np.ndarray, np.ndarray] | None = None) -> str | None:
    """The answer of question `spec` asked by a speaker at position_xy [2] facing yaw_rad; None if unclear.
    seen: view(scene, position_xy, yaw_rad), when the caller asks several questions at the pose."""
    kind = spec["type"]
    index = {o.id: i for i, o in enumerate(scene.objects)}
    if kind == "existence":
        return "yes" if any(o.category == spec["category"] for o in scene.objects) else "no"
    if kind == "count":
        n = sum(o.category == spec["category"] for o in scene.objects)
        return NUMBER_WORDS[n] if 0 < n < len(NUMBER_WORDS) else None
    if kind == "color_unique":
        same = [o for o in scene.objects if o.category == spec["category"]]
        return same[0].color if len(same) == 1 else None

    bearing, distance = seen if seen is not None else view(scene, position_xy, yaw_rad)  # [B], [B]
    if kind == "direction":  # nearest floor object in the sector
        floor = _floor_indices(scene)
        offset = sector_offset(bearing, spec["sector"])
        inner = floor[offset[floor] <= SECTOR_HALF_WIDTH - ANGLE_MARGIN_RAD]
        edge = floor[offset[floor] <= SECTOR_HALF_WIDTH + ANGLE_MARGIN_RAD]
        return _nearest_category(scene, inner, distance, edge)
    if kind == "nearest":
        floor = _floor_indices(scene)
        return _nearest_category(scene, floor, distance, floor)
    if kind == "color":  # the one object of the category in the sector
        same = np.array([i for i, o in enumerate(scene.objects) if o.category == spec["category"]], np.int64)
        offset = sector_offset(bearing[same], spec["sector"]) if len(same) else np.zeros(0)
        inner = same[offset <= SECTOR_HALF_WIDTH - ANGLE_MARGIN_RAD]
        edge = same[offset <= SECTOR_HALF_WIDTH + ANGLE_MARGIN_RAD]
        return scene.objects[inner[0]].color if len(inner) == 1 and len(edge) == 1 else None

    ids = [index[i] for i in spec["objects"]]
    if kind == "navigation":
        for sector, word in NAVIGATION_ANSWER.items():
            if sector_offset(bearing[ids[0]], sector) <= SECTOR_HALF_WIDTH - ANGLE_MARGIN_RAD:
                return word
        return None
    if kind == "left_right":
        b = bearing[ids[0]]
        if LEFT_RIGHT_MIN_RAD <= abs(b) <= np.pi - LEFT_RIGHT_MIN_RAD:
            return "left" if b > 0 else "right"
        return None
    if kind == "closer":
        da, db = distance[ids[0]], distance[ids[1]]
        if abs(da - db) < CLOSER_MARGIN_M:
            return None
        return object_names(scene)[spec["objects"][0] if da < db else spec["objects"][1]]
    if kind == "distance":
        d = distance[ids[0]]
        n = int(np.round(d))
        if n < 1 or abs(d - n) > 0.3 or n >= len(NUMBER_WORDS):
            return None
        return f"{NUMBER_WORDS[n]} meter" + ("s" if n > 1 else "")
    raise ValueError(f"unknown question type {kind!r}")


def answer_type(spec: dict) -> str:
    """SQA3D's answer_type of a question: "yes/no", "number" or "other"."""
    return ANSWER_TYPE.get(spec["type"], "other")


# ---------------------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens: "I am facing the tv." -> ["i", "am", "facing", "the", "tv", "."]."""
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every token (as split by `tokenize`) that a situation, question or answer of the synthetic rooms can
    contain, sorted."""
    texts = [NO_SITUATION, "yes no meter meters", *NUMBER_WORDS, *COLOR_RGB, *SECTOR_PHRASE.values(),
             *NAVIGATION_ANSWER.values(), "a an"]
    for c in CATEGORIES.values():
        texts += [c.name, c.plural]
    templates = [t for t, _ in SITUATION_TEMPLATES.values()] + [f for forms in QUESTION_FORMS.values() for f in forms]
    for template in templates:  # the literal text around the slots
        texts += [literal for literal, _, _, _ in string.Formatter().parse(template)]
    return sorted({token for text in texts for token in tokenize(text)})
