"""What the tiny base learns before Loc3R (`loc3r pretrain-base`): seeing and naming the objects of a video.

LLaVA-Video sees and names objects before Loc3R fine-tunes it; the tiny model starts from random weights. Its base
is pretrained on the synthetic training rooms with frame-space supervision only: no BEV or world coordinates, no
speaker poses (those are the layout and situation objectives the paper's ablation isolates).
- `token_objects`: which object each pooled vision token sees (the object whose footprint holds the token's median
  depth point), so that every such token is supervised to read as its object's colour and category words.
- `grounding_questions`: questions answered from the video alone, many per room (dense supervision: each
  answer word is a retrieval from the vision tokens): "What is the red object?" -> "bed", "What color is the
  bed?" -> "red", existence, how many objects, and the list of the room's objects in random orders; with
  `choices` (`pretrain-base --copy-questions`) also a choice answered by copying one of two names from the
  question ("Which is in the room, the red bed or the red sofa?" -> "red bed": the copy of a name from the prompt
  that the Loc3R stage's "Which is closer to me, the A or the B?" needs).
- `reading_questions` (--copy-questions): what a situation text says, answered from the text alone ("Which object
  am I facing?" -> "sofa"): reading the situation, with no pose.
- `grounding_situation`: a situation text of the Loc3R phrasings naming two of the room's objects ("I am standing
  next to the red bed, facing the blue sofa."), and which two: the base learns to find in the video the objects a
  situation names (its <Pos> token the first, its <Ori> token the second), never where the speaker stands.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loc3r.errors import Loc3rError
from loc3r.synth.catalog import CATEGORIES, COLOR_RGB
from loc3r.synth.language import NUMBER_WORDS, situation_text
from loc3r.synth.scene import Scene
from loc3r.synth.shapes import footprint_distance

FOOTPRINT_MARGIN_M = 0.05  # a token's point this far outside a footprint still sees the object (its faces)
LIST_ORDERS = 2  # lists of the room's objects per room, each in another random order
ABSENT_ASKED = 2  # existence questions about categories the room lacks (and as many about ones it has)


def token_objects(scene: Scene, world_xy: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[...] index into scene.objects of the object each token sees, -1 for none: the object whose footprint (grown
    by FOOTPRINT_MARGIN_M) holds the token's median depth point world_xy [..., 2] (the layout target, in the scan's
    frame); the nearest such footprint when several do. `valid` [...] masks tokens without a point."""
    shape = valid.shape
    if not scene.objects:
        return np.full(shape, -1, np.int64)
    d = footprint_distance(np.asarray(world_xy, np.float64).reshape(-1, 2), *scene.footprints())  # [N, B]
    best = d.argmin(-1)
    inside = (d.min(-1) <= FOOTPRINT_MARGIN_M) & np.asarray(valid).reshape(-1)
    return np.where(inside, best, -1).reshape(shape).astype(np.int64)


def video_token_objects(scene: Scene, cache) -> np.ndarray:
    """[T, n] token_objects of a scene's cached video (data.cache.SceneCache): its layout targets (each token's
    median depth point, BEV) brought back to the scan's frame. What "a vision token sees an object" means everywhere:
    the base's pretraining targets, the benchmarks' and probes' visibility."""
    bev_to_world = np.linalg.inv(cache.world_to_bev)
    xy = cache.layout_xy.astype(np.float64)
    world = xy @ bev_to_world[:2, :2].T + bev_to_world[:2, 3]  # the ground plane's rotation and shift
    return token_objects(scene, world, cache.layout_valid)


def read_scene(data: Path, scene_id: str) -> Scene:
    """The exact description `loc3r synth` wrote of a room (DATA/synth/<scene>.json)."""
    path = Path(data) / "synth" / f"{scene_id}.json"
    try:
        return Scene.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise Loc3rError(f"{path}: no such file (a room written by `loc3r synth` is needed)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise Loc3rError(f"{path}: not a synthetic room description ({e})") from None


def grounding_questions(scene: Scene, rng: np.random.Generator, choices: bool = False) -> list[tuple[str, str, str]]:
    """(question, answer, answer_type) of a basic room (every object its own colour and category), answered from
    the video alone; `choices`: with the choices between two names."""
    objects = scene.objects
    colors, categories = [o.color for o in objects], [o.category for o in objects]
    if len(set(colors)) != len(objects) or len(set(categories)) != len(objects):
        raise ValueError(f"{scene.scene_id}: grounding questions need a basic room (unique colours and categories)")
    out = []
    for o in objects:
        out.append((f"What is the {o.color} object?", o.category, "other"))
        out.append((f"What color is the {o.category}?", o.color, "other"))
    absent = sorted(set(CATEGORIES) - set(categories))
    for c in rng.choice(absent, min(ABSENT_ASKED, len(absent)), replace=False):
        out.append((f"Is there {'an' if c[0] in 'aeiou' else 'a'} {c} in the room?", "no", "yes/no"))
    for c in rng.choice(categories, min(ABSENT_ASKED, len(categories)), replace=False):
        out.append((f"Is there {'an' if c[0] in 'aeiou' else 'a'} {c} in the room?", "yes", "yes/no"))
    for _ in range(LIST_ORDERS):
        listed = " ".join(f"{objects[i].color} {objects[i].category}" for i in rng.permutation(len(objects)))
        out.append(("What objects are in the room?", listed, "other"))
    out.append(("How many objects are there in the room?", NUMBER_WORDS[len(objects)], "number"))
    for o in objects if choices else ():
        first, second = rng.permutation([f"{o.color} {o.category}", _decoy(scene, o, rng)])
        out.append((f"Which is in the room, the {first} or the {second}?", f"{o.color} {o.category}", "other"))
    return out


def _decoy(scene: Scene, o, rng: np.random.Generator) -> str:
    """A colour + category that names no object of a basic room and shares a word with object o: o's category in
    another object's colour (telling them apart needs the colour bound to the category), o's colour on a category
    the room lacks, or o's category in a colour the room lacks."""
    colors, categories = {p.color for p in scene.objects}, {p.category for p in scene.objects}
    options = [f"{c} {o.category}" for c in sorted(colors - {o.color})]
    options += [f"{o.color} {c}" for c in sorted(set(CATEGORIES) - categories)]
    options += [f"{c} {o.category}" for c in sorted(set(COLOR_RGB) - colors)]
    return str(options[rng.integers(len(options))])


READING_QUESTIONS = (("Which object am I next to?", "a", "category"), ("Which object am I facing?", "b", "category"),
                     ("What color is the object I am next to?", "a", "color"),
                     ("What color is the object I am facing?", "b", "color"))


def reading_questions(scene: Scene, a: int, b: int) -> list[tuple[str, str, str]]:
    """(question, answer, answer_type) about a situation text naming object a (the one the speaker stands next to)
    and b (the one faced; grounding_situation): read from the text, with no pose."""
    objects = {"a": scene.objects[a], "b": scene.objects[b]}
    return [(q, getattr(objects[slot], field), "other") for q, slot, field in READING_QUESTIONS]


def grounding_situation(scene: Scene, rng: np.random.Generator) -> tuple[str, int, int]:
    """(text, a, b) a situation of a basic room's phrasings (BASIC_TEMPLATES) naming object a (the one the speaker
    stands next to) and object b (the one faced), indices into scene.objects; no pose."""
    from loc3r.synth.situations import BASIC_TEMPLATES

    a, b = (int(i) for i in rng.choice(len(scene.objects), 2, replace=False))
    names = {k: f"{scene.objects[i].color} {scene.objects[i].category}" for k, i in (("a", a), ("b", b))}
    return situation_text(str(rng.choice(BASIC_TEMPLATES)), names), a, b
