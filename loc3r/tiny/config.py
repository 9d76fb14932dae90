"""The tiny base's settings: what a tiny model pretrained by `loc3r pretrain-base` adds to the paper's config.

A tiny checkpoint's config.json keeps them under "tiny_base", beside the Loc3RConfig fields; a 7B config.json has no
such section. Checkpoints written before this split kept them as top-level fields (`split_legacy` reads both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loc3r.errors import Loc3rError

SECTION = "tiny_base"  # the key of these settings in config.json


@dataclass
class TinyBaseConfig:
    # the text tokens' embeddings enter the LLM multiplied by this (as Gemma's sqrt(hidden size); the tied LM head
    # reads the table unscaled); 1: as Qwen2 does. A base pretrained with a larger one keeps a prompt word's identity
    # through the layers (docs/tiny_base.md). Every model started from such a base keeps its scale
    text_embed_scale: float = 1.0
    # weight of the vision-token word loss (tiny.losses.seeing_loss; batches with token_words only)
    lambda_seeing: float = 1.0
    # weight of the grounding-attention loss: head `grounding_head` of layer `grounding_layer` (counted from the end
    # when negative) of every text token naming a colour or a category attends to the vision tokens that see such an
    # object (tiny.losses.grounding_attention_loss)
    lambda_grounding: float = 1.0
    grounding_layer: int = -2
    grounding_head: int = 0
    # ... and in head `anchor_head` of layer `anchor_layer` the <Ori> token attends to the object the speaker stands
    # by (a facing direction is relative to where one stands); None: off
    anchor_layer: int | None = -1
    anchor_head: int = 1
    # the copy of a name from the prompt (`pretrain-base --copy-questions`, tiny.losses.copy_attention_loss) in head
    # `copy_head` of layer `copy_layer`, weighted by lambda_copy; None: off
    copy_layer: int | None = None
    copy_head: int = 3
    lambda_copy: float = 1.0
    # the Loc3R stage's relation heads (`loc3r train --relation-weight W`, tiny.losses.relation_attention_loss): in
    # layer `relation_layer` the state predicting a situated answer attends, in the three heads `relation_heads`, to
    # the names of the question's objects, to <Pos> and to <Ori>, weighted by lambda_relation; None: off (training
    # only: inference is the paper's). The default heads are of the shipped base's last layer: not the anchor head 1,
    # not the copy head 3, not head 2, which the Loc3R stage makes bring <Ori> the facing object (supervised as a
    # relation head, the orientation did not take off in 450 steps)
    relation_layer: int | None = None
    relation_heads: tuple[int, int, int] = (4, 5, 0)
    lambda_relation: float = 1.0
    # with the relation heads, the answer's state also gives the speaker's pose through the position and orientation
    # heads (tiny.losses.relation_readout_loss)
    relation_readout: bool = False
    # ... and the answer's state of a relation question gives instead the object as the speaker sees it (its place in
    # the speaker's frame, its bearing) through the same heads
    relation_egocentric: bool = False
    # the readout in two stages: the pose (and a relation question's object place) read from the answer's state at the
    # output of this LLM layer (through the final norm), the relation itself (relation_egocentric) from the final
    # state, so that the layers after it have what the relation needs to compute it; None: one stage, the final state
    relation_readout_layer: int | None = None

    def __post_init__(self):
        if not self.text_embed_scale > 0:
            raise Loc3rError(f"text_embed_scale must be > 0, got {self.text_embed_scale}")
        self.relation_heads = tuple(self.relation_heads)  # a JSON list in config.json

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(TinyBaseConfig))
# a field of Loc3RConfig before this split that no model uses any more: its only value that still loads
REMOVED = {"head_input_norm": "none"}


def split_legacy(fields: dict, source: str) -> tuple[dict, dict | None]:
    """(the Loc3RConfig fields, the tiny base's settings or None) of a checkpoint's config.json: the "tiny_base"
    section, or the top-level fields of a checkpoint written before it existed."""
    fields = dict(fields)
    for name, kept in REMOVED.items():
        value = fields.pop(name, kept)
        if value != kept:
            raise Loc3rError(f"{source}: {name} {value!r} is no longer supported (only {kept!r})")
    base = fields.pop(SECTION, None)
    legacy = {k: fields.pop(k) for k in FIELDS if k in fields}
    if base is None and legacy:
        base = legacy
    if base is not None and not isinstance(base, dict):
        raise Loc3rError(f"{source}: {SECTION} is not a JSON object")
    if base is not None and set(base) - set(FIELDS):
        raise Loc3rError(f"{source}: unknown {SECTION} field(s) {', '.join(sorted(set(base) - set(FIELDS)))}")
    return fields, base


def has_tiny_base(fields: dict) -> bool:
    """Whether a checkpoint's config.json is a tiny base's (or a model started from one)."""
    return SECTION in fields or any(k in fields for k in FIELDS)
