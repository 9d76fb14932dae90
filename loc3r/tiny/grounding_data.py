"""The tiny base's pretraining data (`loc3r pretrain-base`): grounding questions of the synthetic training rooms,
each with the words of what every vision token sees (synth/grounding.py: frame-space supervision only)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from loc3r.constants import IGNORE_INDEX, NO_SITUATION
from loc3r.data.benchmarks import QARecord
from loc3r.data.sample import Sample
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError
from loc3r.synth.grounding import (READING_QUESTIONS, grounding_questions, grounding_situation, read_scene,
                                   reading_questions, video_token_objects)
from loc3r.synth.language import tokenize
from loc3r.synth.scene import Scene

WORDS_PER_TOKEN = 3  # a colour and a category of up to two words ("trash can")
READINGS_PER_ROOM = 2 * len(READING_QUESTIONS)  # questions about what a situation text says, per room


def grounding_records(data: Path, split: str, seed: int, copy_questions: bool = False
                      ) -> tuple[list[QARecord], dict[str, Scene]]:
    """The pretraining questions of a split's synthetic rooms (its SQA3D file names the scenes; each room's truth is
    synth/<scene>.json), and the rooms; `copy_questions`: with the choices between two names and the questions
    about the situation text."""
    scene_ids = sorted({r.scene_id for r in read_sqa3d(data, split)})
    records, scenes = [], {}
    for k, scene_id in enumerate(scene_ids):
        scene = read_scene(data, scene_id)
        try:
            questions = grounding_questions(scene, np.random.default_rng([seed, k]), choices=copy_questions)
        except ValueError as e:
            raise Loc3rError(f"{data / 'synth' / scene_id}.json: {e}") from None
        scenes[scene_id] = scene
        rng = np.random.default_rng([seed, k, 1])
        for i, (q, a, kind) in enumerate(questions):
            text, near, faced = grounding_situation(scene, rng)
            records.append(QARecord("grounding", f"{scene_id}_g{i}", scene_id, NO_SITUATION, q, [a], kind,
                                    extra={"situation": text, "situation_objects": (near, faced)}))
        for i in range(READINGS_PER_ROOM if copy_questions else 0):
            text, near, faced = grounding_situation(scene, rng)
            q, a, kind = reading_questions(scene, near, faced)[i % len(READING_QUESTIONS)]
            records.append(QARecord("grounding", f"{scene_id}_r{i}", scene_id, NO_SITUATION, q, [a], kind,
                                    extra={"situation": text, "situation_objects": (near, faced)}))
    return records, scenes


class GroundingDataset:
    """The grounding questions of the training rooms, each Sample with `token_words`: the word ids of the colour and
    category of the object each vision token sees (-100 where it sees none). Wraps SituatedQADataset."""

    def __init__(self, questions, scenes: dict[str, Scene]):
        self.questions, self.scenes = questions, scenes
        self.word_ids = None  # {word: id}, set by bind(tokenizer) before samples are read
        self._words: dict[str, np.ndarray] = {}

    def bind(self, tokenizer) -> None:
        self.word_ids = tokenizer.get_vocab()
        self._words.clear()

    def __len__(self) -> int:
        return len(self.questions)

    def __getattr__(self, name):  # records, video_keys, scene_ids, prepare, scene ...
        return getattr(self.questions, name)

    def token_words(self, scene_id: str) -> np.ndarray:
        """[T, G, WORDS_PER_TOKEN] word ids of what each vision token of the scene's video sees."""
        if scene_id not in self._words:
            if self.word_ids is None:
                raise RuntimeError("GroundingDataset.bind(tokenizer) first")
            scene = self.scenes[scene_id]
            seen = video_token_objects(scene, self.questions.scene(scene_id))  # [T, G]
            table = np.full((len(scene.objects) + 1, WORDS_PER_TOKEN), IGNORE_INDEX, np.int64)  # row -1: nothing seen
            for i, o in enumerate(scene.objects):
                ids = [self.word_ids[w] for w in tokenize(f"{o.color} {o.category}")]
                table[i, :len(ids)] = ids
            self._words[scene_id] = table[seen]
        return self._words[scene_id]

    def __getitem__(self, index: int) -> Sample:
        """The question's sample with its situation text (no pose: has_situation stays False), the words of what
        each vision token sees, and the colours of the objects the situation names (what <Pos> / <Ori> ground to)."""
        sample, record = self.questions[index], self.questions.records[index]
        token_words = self.token_words(sample.scene_id)  # checks that a tokenizer is bound
        objects = self.scenes[sample.scene_id].objects
        words = np.array([self.word_ids[objects[i].color] for i in record.extra["situation_objects"]], np.int64)
        return dataclasses.replace(sample, situation=record.extra["situation"], token_words=token_words,
                                   situation_words=words)
