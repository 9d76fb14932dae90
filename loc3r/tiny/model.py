"""TinyLoc3R: the paper's Loc3R with what the tiny preset's pretrained base adds (loc3r/tiny/config.py).

- its text embeddings enter the LLM `text_embed_scale` x larger (the shipped base: 32), at training and inference;
- on a batch of the base's pretraining (one with `token_words`: `loc3r pretrain-base`), the pretraining losses of
  tiny.losses on top of the paper's, from the attention inputs of the heads they supervise, recorded during the
  paper's forward pass. On any other batch its forward is the paper's.
Checkpoints keep the settings under "tiny_base" in config.json.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import PreTrainedTokenizerBase

from loc3r.constants import IGNORE_INDEX
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R, Loc3ROutput
from loc3r.model.processor import Batch
from loc3r.tiny.config import SECTION, TinyBaseConfig, split_legacy
from loc3r.synth.catalog import CATEGORIES, COLOR_RGB
from loc3r.tiny.losses import (attention_inputs, copy_attention_loss, grounding_attention_loss, layer_outputs,
                               relation_attention_loss, relation_readout_loss, seeing_loss)


@contextlib.contextmanager
def first_layers(llm: torch.nn.Module, depth: int):
    """Within it, the transformers LLM `llm` runs its first `depth` layers only (they read the config's
    num_hidden_layers, as its caches do), then its final norm."""
    n = llm.config.num_hidden_layers
    llm.config.num_hidden_layers = depth
    try:
        yield
    finally:
        llm.config.num_hidden_layers = n


class TinyLoc3R(Loc3R):
    def __init__(self, config: Loc3RConfig, tokenizer: PreTrainedTokenizerBase | None = None,
                 base: TinyBaseConfig | None = None):
        super().__init__(config, tokenizer)
        self.base = base or TinyBaseConfig()
        layers = len(self.vlm.model.language_model.layers)
        if self.base.relation_layer is not None and not -layers <= self.base.relation_layer < layers:
            raise Loc3rError(f"relation layer {self.base.relation_layer}: the LLM has {layers} layers")
        staged = self.base.relation_readout_layer
        if staged is not None and (not -layers <= staged < layers or staged % layers == layers - 1):  # not the last
            raise Loc3rError(f"relation readout layer {staged}: a layer before the last of the LLM's {layers}")
        # whether the relation heads are supervised now (a run switches them on once the orientation has taken off)
        self.relation_active = True
        # the LLM layers the forward runs, the first `depth` (None: all): a run with --added-layers-join runs the
        # base's until the added layers join
        self.depth: int | None = None
        self._name_ids: torch.Tensor | None = None  # name_ids(), once the vocabulary is read

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        embeds = super().embed_text(ids)
        scale = self.base.text_embed_scale
        return embeds if scale == 1 else embeds * scale

    def language_model(self, embeds, attention_mask, position_ids, past_key_values=None, use_cache=False):
        if self.depth is None:
            return super().language_model(embeds, attention_mask, position_ids, past_key_values, use_cache)
        with first_layers(self.vlm.model.language_model, self.depth):
            return super().language_model(embeds, attention_mask, position_ids, past_key_values, use_cache)

    def loss_counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        counts = super().loss_counts(batch)
        if batch.token_words is not None:  # the seeing loss averages over the vision tokens' word targets
            counts["seeing"] = (batch.token_words != IGNORE_INDEX).sum()
        return counts

    def name_ids(self) -> torch.Tensor:
        """Token ids of the words that name objects (the catalogue's colours and categories) in the vocabulary."""
        if self._name_ids is None:
            words = {w for name in [*CATEGORIES, *COLOR_RGB] for w in name.split()}
            vocab = self.tokenizer.get_vocab()
            self._name_ids = torch.tensor(sorted(vocab[w] for w in words if w in vocab))
        return self._name_ids

    def forward(self, batch: Batch, loss_denominators: dict[str, torch.Tensor] | None = None) -> Loc3ROutput:
        if batch.token_words is None:
            b = self.base
            if not self.relation_active or b.relation_layer is None or b.lambda_relation == 0 or batch.labels is None:
                return super().forward(batch, loss_denominators)
            den = self.denominators(batch, loss_denominators)
            staged = b.relation_readout_layer if b.relation_readout else None
            with attention_inputs(self, b.relation_layer) as calls, layer_outputs(self, staged) as states:
                encoded = self.encode(batch)
            out = self.losses(batch, encoded, den)
            name_ids = self.name_ids().to(batch.input_ids.device)
            relation = relation_attention_loss(self, b, batch, calls, name_ids)
            if b.relation_readout and staged is None:
                relation["relation_readout"] = relation_readout_loss(self, batch, encoded.text_hidden,
                                                                     egocentric=b.relation_egocentric)
            elif b.relation_readout:  # the ingredients at the layer's output, the relation at the final state
                ingredients = self.vlm.model.language_model.norm(states[-1])  # the suffixes' of a grouped batch
                relation["relation_readout"] = relation_readout_loss(self, batch, ingredients)
                if b.relation_egocentric:
                    relation["relation_egocentric"] = relation_readout_loss(self, batch, encoded.text_hidden,
                                                                            pose=False, egocentric=True)
            return Loc3ROutput(out.loss + b.lambda_relation * sum(relation.values()), {**out.losses, **relation},
                               out.layout, out.position, out.orientation_logits)
        b = self.base
        den = self.denominators(batch, loss_denominators)
        grounding = b.lambda_grounding > 0
        anchor = grounding and batch.situation_words is not None and b.anchor_layer is not None
        copy = grounding and b.copy_layer is not None and batch.labels is not None
        with contextlib.ExitStack() as stack:
            calls = {name: stack.enter_context(attention_inputs(self, layer if on else None))
                     for name, layer, on in (("grounding", b.grounding_layer, grounding),
                                             ("anchor", b.anchor_layer, anchor), ("copy", b.copy_layer, copy))}
            encoded = self.encode(batch)
        out = self.losses(batch, encoded, den)
        extra = {"seeing": seeing_loss(self, encoded.vision.flatten(2, 3),
                                              self.vision_states(encoded.video_hidden, batch.input_ids),
                                              batch.token_words, den.get("seeing"))}
        loss = out.loss + b.lambda_seeing * extra["seeing"]
        if grounding:
            extra["grounding"] = grounding_attention_loss(self, b, batch, calls["grounding"])
            loss = loss + b.lambda_grounding * extra["grounding"]
        if anchor:
            extra["anchor"] = grounding_attention_loss(self, b, batch, calls["anchor"], anchor=True)
            loss = loss + b.lambda_grounding * extra["anchor"]
        if copy:
            extra["copy"], extra["copy_output"] = copy_attention_loss(self, b, batch, calls["copy"])
            loss = loss + b.lambda_copy * (extra["copy"] + extra["copy_output"])
        return Loc3ROutput(loss, {**out.losses, **extra}, out.layout, out.position, out.orientation_logits)

    # ---- checkpoints --------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return super().config_dict() | {SECTION: self.base.to_dict()}

    @classmethod
    def from_config_dict(cls, fields: dict, tokenizer: PreTrainedTokenizerBase, source: str) -> "TinyLoc3R":
        fields, base = split_legacy(fields, source)
        return cls(Loc3RConfig.from_dict(fields, source), tokenizer, TinyBaseConfig(**(base or {})))
