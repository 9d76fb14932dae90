"""One training / evaluation example: a video of a scene, a situation, a question, its answer and targets.

Everything spatial is in the video's BEV frame (loc3r.geometry): metres, first frame at the origin facing +y.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    scene_id: str
    question_id: int
    frames: np.ndarray  # [T, S, S, 3] uint8, the sampled video frames resized to the vision tower's input size
    camera_poses_bev: np.ndarray  # [T, 4, 4] float32 camera-to-BEV poses (input of the `poses` prior)
    layout_xy: np.ndarray  # [T, G, 2] float32 BEV (x, y) target of each pooled vision token, G = gh * gw
    layout_valid: np.ndarray  # [T, G] bool, False where the target is masked (too few valid depth pixels)
    situation: str  # the situation text (NO_SITUATION when the question has none)
    question: str
    answers: list[str]  # reference answers; answers[0] is the training target
    position_xy: np.ndarray  # [2] float32 BEV position of the speaker in metres (zeros when has_situation is False)
    yaw_rad: float  # BEV facing direction of the speaker, radians in (-pi, pi]
    has_situation: bool  # whether position / yaw are supervised (False for non-situated questions)
    question_type: str = "N/A"
    camera_tokens: np.ndarray | None = None  # [T, d] cached prior tokens (e.g. CUT3R), None when not used
    frame_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [T] source frame indices
    frame_times: np.ndarray | None = None  # [T] seconds of the sampled frames in the video (the time instruction)
    duration_s: float | None = None  # the whole video's length, seconds
    # [T, G, K] int64 token ids each pooled vision token should read as (its object's colour and category words:
    # the base pretraining's frame-space supervision, `loc3r pretrain-base`), -100 where none; None otherwise
    token_words: np.ndarray | None = None
    # [2] int64 the words the <Pos> and <Ori> tokens ground to (the colours of the objects a situation names: the
    # one the speaker is next to, the one faced; base pretraining only), -100 for none; None otherwise
    situation_words: np.ndarray | None = None
    # [2] float32 BEV (x, y) of the object a relation question asks about (left / right, navigation, distance), NaN
    # for other questions; synthetic rooms only (tiny.relation_data, the tiny model's relation readout); None otherwise
    object_xy: np.ndarray | None = None

    @property
    def answer(self) -> str:
        return self.answers[0]
