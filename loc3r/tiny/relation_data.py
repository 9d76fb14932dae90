"""Where the object of a relation question stands, for the tiny model's relation readout (`loc3r train
--relation-readout`, tiny.losses.relation_readout_loss): synthetic rooms only, read from their ground truth
(synth/<scene>.json, which `loc3r synth` writes beside the SQA3D files).

A relation question (left / right, navigation, distance) names one object; its place in a sample's BEV frame follows
from the sample's own pose: the synthetic scene's frame and the video's BEV frame differ by a rigid motion of the
floor, which the speaker's pose in both fixes (yaw difference, then translation). So no loop start's BEV frame is
needed here, only the sample's targets.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from loc3r.data.sample import Sample
from loc3r.errors import Loc3rError
from loc3r.synth.relations import object_distance
from loc3r.synth.scene import Scene
from loc3r.synth.shapes import rotate_xy
from loc3r.synth.situations import RELATION_KINDS


def scene_relations(path: Path) -> dict[int, tuple[np.ndarray, float, np.ndarray, float]]:
    """question_id -> (the speaker's position [2] and yaw in the scene's frame, the object's centre [2] there, the
    distance from the speaker to the object's footprint, as a distance question's answer measures it:
    synth.relations.object_distance) for the relation questions of a synth/<scene>.json."""
    try:
        desc = json.loads(path.read_text())
        scene = Scene.from_json(desc)
        index = {o.id: i for i, o in enumerate(scene.objects)}
        out = {}
        for q in desc["questions"]:
            if q["question_type"] not in RELATION_KINDS or q["situation_id"] is None:
                continue
            i = index[q["spec"]["objects"][0]]
            position = np.asarray(q["position"], np.float64)
            out[q["question_id"]] = (position, float(q["yaw"]), scene.objects[i].center[:2].astype(np.float64),
                                     float(object_distance(scene, position)[0, i]))
        return out
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as e:  # as synth.grounding.read_scene
        raise Loc3rError(f"{path}: not a synthetic room description ({e!r})") from None


def object_place(sample: Sample, relation: tuple[np.ndarray, float, np.ndarray, float] | None,
                 as_seen: bool = False) -> np.ndarray:
    """The object's BEV (x, y) [2] float32 for a sample and its question's scene_relations entry (NaN for none):
    its centre, or `as_seen` the point in the direction of its centre at the distance of its footprint (what the
    answers read: left / right and the way to go by the centre's bearing, how far by the footprint's distance)."""
    if relation is None or not sample.has_situation:
        return np.full(2, np.nan, np.float32)
    position, yaw, centre, reach = relation
    offset = centre - position
    if as_seen:
        offset = offset * (reach / max(float(np.linalg.norm(offset)), 1e-9))
    turn = float(sample.yaw_rad) - yaw  # scene frame -> BEV frame
    return (rotate_xy(offset, turn) + np.asarray(sample.position_xy, np.float64)).astype(np.float32)


class ObjectPlaces:
    """A training set whose samples carry `object_xy` (Sample), from the synth/<scene>.json of the first of `roots`
    that has one for the scene (NaN for every question of a scene none has); everything else is the wrapped set's.
    as_seen: the places object_place gives `as_seen` (the egocentric readout's)."""

    def __init__(self, dataset, roots: list[Path], as_seen: bool = False):
        self.dataset, self.roots, self.as_seen = dataset, [Path(r) for r in roots], as_seen
        self._scenes: dict[str, dict] = {}

    def relations(self, scene_id: str) -> dict:
        if scene_id not in self._scenes:
            files = [r / "synth" / f"{scene_id}.json" for r in self.roots]
            found = next((f for f in files if f.is_file()), None)
            self._scenes[scene_id] = scene_relations(found) if found else {}
        return self._scenes[scene_id]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Sample:
        sample = self.dataset[i]
        place = object_place(sample, self.relations(sample.scene_id).get(sample.question_id), self.as_seen)
        return dataclasses.replace(sample, object_xy=place)

    def __getattr__(self, name):  # the wrapped set's attributes (video_keys, prepare, bind, ...)
        return getattr(self.dataset, name)
