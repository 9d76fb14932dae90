"""Loc3R-VLM: transformers' LlavaOnevision + camera-token prior + layout reconstruction + situation tokens and heads.

The base VLM is used as is, through its own submodules (no fork of its code):
- video features: LlavaOnevision's own modules, as `LlavaOnevisionModel.get_video_features` chains them (SigLIP ->
  feature layer / select strategy -> multi_modal_projector -> 2x2 pooling: its `apply_pooling` for "bilinear",
  avg_pool2d for "average"), and its `image_newline` parameter. Pooled tokens are row-major over
  `config.frame_grid`, the order the layout targets use.
- the LLM: `language_model` (Qwen2) called with `inputs_embeds`, then `lm_head`.

Video block of the LLM input (the `<video>` placeholder run of `config.video_placeholder_len` tokens), with
cam_t = camera_projector(prior token of frame t) (absent with prior 'none') and nl = image_newline:
    grid (LLaVA-Video's training layout): [cam_1, row_1,1, nl, row_1,2, nl, ..., row_1,G, nl, cam_2, ...]
    one_token (transformers' layout):     [cam_1, v_1,1 .. v_1,n, cam_2, ..., v_T,n, nl]
`config.vision_token_slots()` gives every vision token's position in it.

Two efficiency choices: a frozen vision tower and prior build no autograd graph (their parameters do not require
grad), and the LM loss applies `lm_head` to the answer positions only, not to the thousands of video tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights

from loc3r.constants import END_OF_TURN, IGNORE_INDEX, ORI_TOKEN, POS_TOKEN, VIDEO_TOKEN
from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir, write_json
from loc3r.model.config import Loc3RConfig
from loc3r.model.heads import GaussianXY, LayoutHead, OrientationHead, PositionHead, mlp
from loc3r.model.losses import circular_soft_argmax, gaussian_nll, kl_orientation, wrapped_gaussian_target
from loc3r.model.processor import Batch
from loc3r.model.tokenizer import add_situation_tokens, build_tiny_tokenizer, load_tokenizer
from loc3r.priors.base import CachedTokensPrior, NoPrior, PosePrior
from loc3r.priors.poses import PosesPrior


@dataclass
class Loc3ROutput:
    loss: torch.Tensor  # [] L = lm + l_layout * layout + l_sit * (position + l_ori * orientation)
    losses: dict[str, torch.Tensor]  # 'lm', 'layout', 'position', 'orientation', each []
    layout: GaussianXY  # [B, T, n, 2] BEV Gaussian of every vision token
    position: GaussianXY  # [B, 2] BEV Gaussian of the speaker's position (from <Pos>)
    orientation_logits: torch.Tensor  # [B, bins] (from <Ori>)


@dataclass
class Generation:
    token_ids: torch.Tensor  # [B, N] greedy answer tokens (pad after the end of turn)
    position: GaussianXY  # [B, 2]
    orientation_logits: torch.Tensor  # [B, bins]
    layout: GaussianXY  # [B, T, n, 2] the layout head on every vision token: the model's own bird's-eye map


@dataclass
class Prediction:
    answer: str  # decoded answer text
    position_xy: np.ndarray  # [2] BEV position of the speaker, metres
    position_sigma: np.ndarray  # [2] its standard deviation per axis, metres
    yaw_rad: float  # BEV facing direction (circular soft-argmax), radians
    yaw_probs: np.ndarray  # [bins] distribution over the orientation bins
    layout_xy: np.ndarray  # [T, n, 2] BEV (x, y) the layout head gives each vision token (the "cognitive map")


def build_prior(config: Loc3RConfig) -> PosePrior:
    return {"poses": PosesPrior, "cut3r": lambda: CachedTokensPrior(config.cut3r_dim), "none": NoPrior}[config.prior]()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over real tokens only (left or right padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class Loc3R(nn.Module):
    def __init__(self, config: Loc3RConfig, tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        config = dataclasses.replace(config)  # a copy: _build_vlm writes the final VLM config (vocabulary) into it
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer(config)
        self.vlm = _build_vlm(config, self.tokenizer)
        self.config = config
        D = config.hidden_size
        self.prior = build_prior(config)
        self.camera_projector = mlp(config.prior_dim, D, D) if config.has_camera_token else None
        norm = config.head_input_norm == "batch"
        self.layout_head = LayoutHead(D, norm)
        self.position_head = PositionHead(D, norm)
        self.orientation_head = OrientationHead(D, config.orientation_bins, norm)
        self.to(getattr(torch, config.dtype))
        # frozen per the paper: the vision tower (switchable) and the prior
        vision_tower = self.vlm.model.vision_tower
        vision_tower.requires_grad_(config.train_vision_tower)
        if getattr(vision_tower, "post_layernorm", None) is not None:  # unused: features are hidden_states[layer],
            vision_tower.post_layernorm.requires_grad_(False)  # taken before it (no gradient; DDP would complain)
        self.prior.requires_grad_(False)
        self.pos_token_id, self.ori_token_id = self.tokenizer.convert_tokens_to_ids([POS_TOKEN, ORI_TOKEN])
        stops = {self.tokenizer.convert_tokens_to_ids(END_OF_TURN), self.tokenizer.eos_token_id}
        self.stop_token_ids = sorted(i for i in stops if i is not None and i != self.tokenizer.unk_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.stop_token_ids[0]  # fills finished rows in generate()

    # ---- LoRA (fine-tuning on one 24 GB GPU) -----------------------------------------------------------------
    def add_lora(self, rank: int, alpha: float | None = None, dropout: float = 0.0) -> None:
        """LoRA adapters (peft) on the LLM's attention and MLP projections; everything else of the base VLM is
        frozen, the camera projector and the three heads stay fully trained. checkpoint_tensors() merges the
        adapters into plain weights, so a saved checkpoint needs no peft."""
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ModuleNotFoundError:
            raise Loc3rError("--lora needs peft: pip install 'loc3r[lora]' (or pip install peft)") from None
        if rank < 1:
            raise Loc3rError(f"--lora must be a rank >= 1, got {rank}")
        self.lora_scaling = (alpha if alpha is not None else 2 * rank) / rank
        config = LoraConfig(r=rank, lora_alpha=self.lora_scaling * rank, lora_dropout=dropout, bias="none",
                            target_modules=LORA_TARGETS)
        self.requires_grad_(False)
        inject_adapter_in_model(config, self.vlm.model.language_model)
        for name, p in self.named_parameters():
            p.requires_grad_(".lora_" in name)
        for module in (self.camera_projector, self.layout_head, self.position_head, self.orientation_head):
            if module is not None:
                module.requires_grad_(True)

    @property
    def has_lora(self) -> bool:
        return hasattr(self, "lora_scaling")

    def lora_tensors(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The adapters' tensors (of `state`, default this model's state_dict)."""
        state = self.state_dict() if state is None else state
        return {k: v for k, v in state.items() if ".lora_" in k}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: LLM, projectors, image_newline, heads (and the vision tower if switched on)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ---- inputs -------------------------------------------------------------------------------------------
    def camera_tokens(self, batch: Batch) -> torch.Tensor | None:
        """Projected camera tokens [B, T, D], or None without a prior."""
        tokens = self.prior(batch)  # [B, T, d_prior] or None
        if tokens is None:
            return None
        return self.camera_projector(tokens.to(self.camera_projector[0].weight.dtype))

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected, pooled vision tokens [B, T, gh, gw, D] of normalised frames [B, T, 3, S, S]."""
        model, c = self.vlm.model, self.config
        B, T = pixels.shape[:2]
        out = model.vision_tower(pixels.flatten(0, 1).to(self.vlm.dtype), output_hidden_states=True)
        layer = model.config.vision_feature_layer
        features = (out.hidden_states[layer] if isinstance(layer, int)
                    else torch.cat([out.hidden_states[i] for i in layer], -1))
        if model.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]
        features = model.multi_modal_projector(features)  # [B * T, p * p, D]
        if c.pool_mode == "bilinear":
            pooled = model.apply_pooling(features)
        else:  # LLaVA-NeXT get_2dPool, mm_spatial_pool_mode "average"
            p = c.patch_grid
            grid = features.view(B * T, p, p, -1).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(grid, 2).permute(0, 2, 3, 1)
        gh, gw = c.frame_grid
        return pooled.reshape(B, T, gh, gw, -1)

    def video_block(self, batch: Batch, vision: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of the video block [B, video_placeholder_len, D] (layout in the module docstring), from the
        batch's frames or from their vision tokens when given."""
        if vision is None:
            vision = self.vision_tokens(batch.pixel_values_videos)  # [B, T, gh, gw, D]
        B, T, gh, gw, D = vision.shape
        newline = self.vlm.model.image_newline.to(vision.dtype)
        if self.config.newline_layout == "grid":
            vision = torch.cat([vision, newline.expand(B, T, gh, 1, D)], 3)  # a newline after every row
        frames = vision.reshape(B, T, -1, D)
        camera = self.camera_tokens(batch)  # [B, T, D] or None
        if camera is not None:
            frames = torch.cat([camera[:, :, None].to(frames.dtype), frames], 2)
        block = frames.flatten(1, 2)
        if self.config.newline_layout == "one_token":
            block = torch.cat([block, newline.expand(B, 1, D)], 1)
        return block

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """The token embeddings of `ids` as the LLM takes them (times config.text_embed_scale)."""
        embeds = self.vlm.get_input_embeddings()(ids)
        scale = self.config.text_embed_scale
        return embeds if scale == 1 else embeds * scale

    def embed_inputs(self, batch: Batch, vision: torch.Tensor | None = None) -> torch.Tensor:
        """LLM input embeddings [B, L, D]: token embeddings with the video block scattered into the <video> run."""
        ids = batch.input_ids  # [B, L]
        embeds = self.embed_text(ids)
        video = self.video_block(batch, vision)  # [B, Lv, D]
        is_video = ids == self.config.video_token_id  # [B, L]
        counts = is_video.sum(1)
        if (counts != video.shape[1]).any():
            raise Loc3rError(f"the batch has {counts.tolist()} {VIDEO_TOKEN} tokens per sample, the model needs "
                             f"{video.shape[1]} (num_frames={self.config.num_frames}, prior={self.config.prior}): "
                             "build batches with loc3r.model.processor.Collator of the same config")
        return embeds.masked_scatter(is_video[..., None], video.to(embeds.dtype))

    def vision_states(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states of the vision tokens [B, T, n, D] (camera and newline tokens dropped)."""
        video = hidden[input_ids == self.config.video_token_id].view(hidden.shape[0], -1, hidden.shape[-1])
        slots = torch.from_numpy(self.config.vision_token_slots()).to(hidden.device)  # [T, n]
        return video[:, slots]

    def language_model(self, embeds, attention_mask, position_ids, past_key_values=None, use_cache=False):
        return self.vlm.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                             position_ids=position_ids, past_key_values=past_key_values,
                                             use_cache=use_cache)

    def situation_heads(self, hidden: torch.Tensor, batch: Batch) -> tuple[GaussianXY, torch.Tensor]:
        """Position Gaussian [B, 2] and orientation logits [B, bins] from the <Pos> / <Ori> final states."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (self.position_head(hidden[rows, batch.pos_index]),
                self.orientation_head(hidden[rows, batch.ori_index]))

    # ---- training -----------------------------------------------------------------------------------------
    @staticmethod
    def loss_counts(batch: Batch) -> dict[str, torch.Tensor]:
        """Entries each loss averages over in this batch: answer tokens, valid layout coordinates (x and y),
        situated position coordinates, situated samples. The default denominators of `forward`."""
        situated = batch.has_situation.sum()
        words = (batch.token_words != IGNORE_INDEX).sum() if batch.token_words is not None else situated.new_zeros(())
        return {"lm": (batch.labels[:, 1:] != IGNORE_INDEX).sum(), "layout": 2 * batch.layout_valid.sum(),
                "position": 2 * situated, "orientation": situated, "seeing": words}

    def shared_prefix_pass(self, batch: Batch, vision: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM over a grouped batch (Collator.grouped): the video prefixes once [Bv, Lp], then every question's
        suffix [Bq, Ls] against its video's keys / values (gradients flow back into the shared prefix).
        Returns the final hidden states of the prefixes [Bv, Lp, D] and of the suffixes [Bq, Ls, D]. Equal to
        running each question's whole sequence (tests/test_shared_prefix.py)."""
        prefix_mask = batch.attention_mask  # [Bv, Lp]
        prefix = self.language_model(self.embed_inputs(batch, vision), prefix_mask, position_ids_from_mask(prefix_mask),
                                     use_cache=True)
        cache = prefix.past_key_values
        cache.batch_select_indices(batch.video_index)  # each question gets its video's keys / values
        mask = torch.cat([prefix_mask[batch.video_index], batch.suffix_mask], 1)  # [Bq, Lp + Ls]
        position_ids = position_ids_from_mask(mask)[:, prefix_mask.shape[1]:]
        text = self.embed_text(batch.suffix_ids)
        out = self.language_model(text, mask, position_ids, past_key_values=cache)
        return prefix.last_hidden_state, out.last_hidden_state

    def forward(self, batch: Batch, loss_denominators: dict[str, torch.Tensor] | None = None,
                situation_scale: float = 1.0) -> Loc3ROutput:
        """Losses of a training batch: one sequence per question (Collator) or several questions per video
        (Collator.grouped, the shared-prefix pass). `loss_denominators` (see loss_counts) replace the batch's own
        counts, so that the trainer can normalise by the counts of a whole optimizer step; `situation_scale`
        scales lambda_situation (the trainer's geometry-first schedule)."""
        c = self.config
        den = loss_denominators or {k: v.clamp(min=1) for k, v in self.loss_counts(batch).items()}
        vision = self.vision_tokens(batch.pixel_values_videos)  # [B or Bv, T, gh, gw, D]
        grounding = batch.token_words is not None and c.lambda_grounding > 0
        anchor = grounding and batch.situation_words is not None and c.anchor_layer is not None
        copy = grounding and c.copy_layer is not None and batch.labels is not None
        with (self.attention_inputs(c.grounding_layer if grounding else None) as recorded,
              self.attention_inputs(c.anchor_layer if anchor else None) as recorded_anchor,
              self.attention_inputs(c.copy_layer if copy else None) as recorded_copy):
            if batch.grouped:
                video_hidden, text_hidden = self.shared_prefix_pass(batch, vision)  # [Bv, Lp, D], [Bq, Ls, D]
            else:
                attention_mask = batch.attention_mask
                text_hidden = video_hidden = self.language_model(
                    self.embed_inputs(batch, vision), attention_mask,
                    position_ids_from_mask(attention_mask)).last_hidden_state

        # LM cross-entropy on the answer tokens: the state at i predicts label i + 1
        targets = batch.labels[:, 1:]  # [B, L-1]
        supervised = targets != IGNORE_INDEX
        logits = self.vlm.lm_head(text_hidden[:, :-1][supervised])  # [N, V]
        lm = F.cross_entropy(logits.float(), targets[supervised], reduction="sum") / den["lm"]

        vision_states = self.vision_states(video_hidden, batch.input_ids)  # [B, T, n, D]
        layout = self.layout_head(vision_states)  # [B, T, n, 2] x2
        position, orientation_logits = self.situation_heads(text_hidden, batch)
        situated = batch.has_situation  # [B] bool
        yaw_target = wrapped_gaussian_target(batch.yaw_rad, c.orientation_bins, c.orientation_sigma_rad)
        nll_terms = {"layout": (*layout, batch.layout_xy, batch.layout_valid, c.sigma_floor, den["layout"]),
                     "position": (*position, batch.position_xy, situated, c.sigma_floor, den["position"])}
        losses = {"lm": lm, **{name: gaussian_nll(*args) for name, args in nll_terms.items()},
                  "orientation": kl_orientation(orientation_logits, yaw_target, situated, den["orientation"])}
        # what the gradient follows: with nll_beta the beta-NLL terms; `losses` logs the NLL either way
        spatial = {name: gaussian_nll(*args, c.nll_beta) for name, args in nll_terms.items()} if c.nll_beta else losses
        lambda_situation = c.lambda_situation * situation_scale  # the trainer's schedule
        loss = (lm + c.lambda_layout * spatial["layout"]
                + lambda_situation * (spatial["position"] + c.lambda_orientation * losses["orientation"]))
        if batch.token_words is not None:  # base pretraining: every vision token reads as its object's words
            losses["seeing"] = self.seeing_loss(vision.flatten(2, 3), vision_states, batch.token_words,
                                                den.get("seeing"))
            loss = loss + c.lambda_seeing * losses["seeing"]
        if grounding:
            losses["grounding"] = self.grounding_attention_loss(batch, recorded)
            loss = loss + c.lambda_grounding * losses["grounding"]
        if anchor:
            losses["anchor"] = self.grounding_attention_loss(batch, recorded_anchor, anchor=True)
            loss = loss + c.lambda_grounding * losses["anchor"]
        if copy:
            losses["copy"], losses["copy_output"] = self.copy_attention_loss(batch, recorded_copy)
            loss = loss + c.lambda_copy * (losses["copy"] + losses["copy_output"])
        return Loc3ROutput(loss, losses, layout, position, orientation_logits)

    @contextlib.contextmanager
    def attention_inputs(self, layer: int | None):
        """Records the (hidden_states, position_embeddings) every call of layer `layer`'s self-attention receives
        (the prefix pass, then the suffix pass of a grouped batch); records nothing for None."""
        calls = []
        if layer is None:
            yield calls
            return
        attention = self.vlm.model.language_model.layers[layer].self_attn

        def record(module, args, kwargs):
            calls.append((kwargs["hidden_states"], kwargs["position_embeddings"]))

        handle = attention.register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield calls
        finally:
            handle.remove()

    def head_attention(self, batch: Batch, calls: list, layer: int, head: int,
                       values: bool = False) -> dict[str, torch.Tensor]:
        """Head `head` of layer `layer` (calls: that layer's recorded inputs), recomputed from the text tokens: its
        own q / k projections and rotary embedding, over every key a token attends to (padding and the causal mask
        respected). Returns logits [B, Lq, Lk] (-inf where not allowed), allowed [B, Lq, Lk], the keys' token ids
        key_ids [B, Lk], the queries' query_ids, query_mask (text tokens) and query_labels [B, Lq] (the label each
        query state predicts: the labels shifted by one, -100 none), and with `values` the head's values of the
        keys [B, Lk, d] and its columns of o_proj, output [D, d]. For a grouped batch the queries are the
        suffixes' tokens and the keys their video's prefix, then the suffix."""
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

        attention = self.vlm.model.language_model.layers[layer].self_attn
        d = attention.head_dim
        kv_head = head // (attention.config.num_attention_heads // attention.config.num_key_value_heads)

        def q_k(hidden, rope):
            q = attention.q_proj(hidden).unflatten(-1, (-1, d)).transpose(1, 2)  # [B, H, L, d]
            k = attention.k_proj(hidden).unflatten(-1, (-1, d)).transpose(1, 2)  # [B, KV, L, d]
            q, k = apply_rotary_pos_emb(q, k, *rope)
            return q[:, head], k[:, kv_head]  # [B, L, d] each

        def head_values(hidden):
            return attention.v_proj(hidden).unflatten(-1, (-1, d))[:, :, kv_head]  # [B, L, d]

        ids = batch.input_ids
        if batch.grouped:
            (prefix_hidden, prefix_rope), (text_hidden, text_rope) = calls
            _, k_prefix = q_k(prefix_hidden, prefix_rope)
            q, k_text = q_k(text_hidden, text_rope)
            v = batch.video_index
            keys = torch.cat([k_prefix[v], k_text], 1)  # [Bq, Lp + Ls, d]
            Ls = batch.suffix_ids.shape[1]
            allowed = torch.cat([batch.attention_mask[v, None].bool().expand(-1, Ls, -1),
                                 torch.ones(Ls, Ls, dtype=torch.bool, device=ids.device).tril()
                                 & batch.suffix_mask[:, None].bool()], 2)  # [Bq, Ls, Lp + Ls]
            key_ids = torch.cat([ids[v], batch.suffix_ids], 1)
            query_ids, query_mask = batch.suffix_ids, batch.suffix_mask.bool()
        else:
            ((hidden, rope),) = calls
            q, keys = q_k(hidden, rope)
            causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril()
            allowed = causal & batch.attention_mask[:, None].bool()
            key_ids, query_ids, query_mask = ids, ids, batch.attention_mask.bool() & (ids != self.config.video_token_id)
        query_labels = torch.full_like(query_ids, IGNORE_INDEX)
        if batch.labels is not None:
            query_labels[:, :-1] = batch.labels[:, 1:]
        logits = (q @ keys.transpose(1, 2)).float() * attention.scaling  # [B, Lq, Lk]
        out = {"logits": logits.masked_fill(~allowed, float("-inf")), "allowed": allowed, "key_ids": key_ids,
               "query_ids": query_ids, "query_mask": query_mask, "query_labels": query_labels}
        if values:
            out["values"] = (torch.cat([head_values(prefix_hidden)[v], head_values(text_hidden)], 1)  # [Bq, Lp + Ls, d]
                             if batch.grouped else head_values(hidden))
            out["output"] = attention.o_proj.weight[:, head * d:(head + 1) * d]
        return out

    @staticmethod
    def attention_mass_loss(logits: torch.Tensor, target: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """-log(the attention mass on the target keys) [B, Lq, Lk] bool, averaged over the `queries` [B, Lq] that
        have at least one target key (0 when none has)."""
        queries = queries & target.any(-1)
        if not queries.any():
            return logits.new_zeros(())
        logits = logits[queries]
        mass = torch.logsumexp(logits.masked_fill(~target[queries], float("-inf")), -1)
        return (torch.logsumexp(logits, -1) - mass).mean()

    def grounding_attention_loss(self, batch: Batch, calls: list, anchor: bool = False) -> torch.Tensor:
        """The base pretraining's grounding of words in the video: in head `grounding_head` of layer
        `grounding_layer`, every text token whose word is the colour or the category of an object some vision tokens
        see (`batch.token_words`) attends to those tokens, and so do the <Pos> / <Ori> tokens for the words of
        `batch.situation_words` (the objects a situation names). `anchor`: instead, in head `anchor_head` of layer
        `anchor_layer`, only the <Ori> token, to the tokens of the object the speaker stands by (calls: that layer's
        recorded inputs). The attention logits are the layer's own (head_attention); the loss
        is -log(the attention mass on those vision tokens), averaged over the text tokens with at least one such
        vision token."""
        c = self.config
        layer, head = (c.anchor_layer, c.anchor_head) if anchor else (c.grounding_layer, c.grounding_head)
        a = self.head_attention(batch, calls, layer, head)
        # the words each position of the video sequence sees: [Bv, Lp, K], -100 off the vision tokens
        ids = batch.input_ids
        is_video = ids == c.video_token_id
        words = batch.token_words.flatten(1, 2)  # [Bv, T * n, K]
        slots = torch.from_numpy(c.vision_token_slots().reshape(-1)).to(ids.device)
        video_words = words.new_full((ids.shape[0], c.video_placeholder_len, words.shape[-1]), IGNORE_INDEX)
        video_words[:, slots] = words
        seen = words.new_full((*ids.shape, words.shape[-1]), IGNORE_INDEX)
        seen[is_video] = video_words.flatten(0, 1)
        query_ids = a["query_ids"]
        if batch.grouped:
            v = batch.video_index
            key_words = torch.cat([seen[v], seen.new_full((len(v), query_ids.shape[1], seen.shape[-1]),
                                                          IGNORE_INDEX)], 1)
        else:
            key_words = seen
        rows = torch.arange(len(query_ids), device=ids.device)
        if anchor:  # only <Ori>, to the speaker's anchor
            query_ids = torch.full_like(query_ids, IGNORE_INDEX)
            query_ids[rows, batch.ori_index] = batch.situation_words[:, 0]
        elif batch.situation_words is not None:  # <Pos> / <Ori> ground to the objects the situation names
            query_ids = query_ids.clone()
            query_ids[rows, batch.pos_index] = batch.situation_words[:, 0]
            query_ids[rows, batch.ori_index] = batch.situation_words[:, 1]
        matches = (key_words[:, None] == query_ids[:, :, None, None]) & (key_words[:, None] != IGNORE_INDEX)
        return self.attention_mass_loss(a["logits"], matches.any(-1) & a["allowed"], a["query_mask"])

    def copy_attention_loss(self, batch: Batch, calls: list) -> tuple[torch.Tensor, torch.Tensor]:
        """The base pretraining's copy of a name from the prompt (`copy_head` of layer `copy_layer`; calls: that
        layer's recorded inputs), supervised densely, as benchmarks/toy_recall.py found a tiny LLM needs to learn
        in-context recall: (where) the state that predicts an answer token which is a word of the prompt (not a
        special token) attends to where that word stands in the prompt (the unlabelled text tokens): -log(the
        attention mass there); (what) the head's output there (its attention over its values, through its columns
        of o_proj), read through the LM head, is that word: cross-entropy. Both averaged over such answer tokens."""
        a = self.head_attention(batch, calls, self.config.copy_layer, self.config.copy_head, values=True)
        key_ids, labels = a["key_ids"], a["query_labels"]
        special = torch.tensor(sorted(self.tokenizer.all_special_ids), device=key_ids.device)
        # the keys that are prompt words: not a special token and not a label (answers are labelled where they stand)
        key_labels = batch.labels if not batch.grouped else torch.cat(
            [torch.full_like(batch.input_ids[batch.video_index], IGNORE_INDEX), batch.labels], 1)
        prompt = ~torch.isin(key_ids, special) & (key_labels == IGNORE_INDEX)  # [B, Lk]
        copied = (labels != IGNORE_INDEX) & ~torch.isin(labels, special)  # [B, Lq]
        target = (key_ids[:, None] == labels[:, :, None]) & prompt[:, None] & a["allowed"]
        where = self.attention_mass_loss(a["logits"], target, copied)
        copied = copied & target.any(-1)
        if not copied.any():
            return where, where.new_zeros(())
        rows, cols = copied.nonzero(as_tuple=True)
        weights = a["logits"][rows, cols].softmax(-1)  # [N, Lk]
        head_out = torch.einsum("nk,nkd->nd", weights, a["values"][rows].float()) @ a["output"].float().T  # [N, D]
        what = F.cross_entropy(self.vlm.lm_head(head_out.to(a["output"].dtype)).float(), labels[rows, cols])
        return where, what

    def seeing_loss(self, vision: torch.Tensor, states: torch.Tensor, words: torch.Tensor,
                    denominator: torch.Tensor | None) -> torch.Tensor:
        """The base pretraining's frame-space supervision: each labelled vision token [B, T, n] is read through
        the (tied) word embeddings as its words [B, T, n, K] (K targets each, -100 none), both where it enters the
        LLM (vision [B, T, n, D]: the projector's output, aligned with the words' embeddings, as LLaVA's first
        stage aligns the projector) and where it leaves it (states [B, T, n, D], through the LM head). Cross-entropy
        summed over both and over the targets, divided by `denominator` (default: the number of targets)."""
        table = self.vlm.get_input_embeddings().weight  # [V, D]
        total = vision.new_zeros((), dtype=torch.float32)
        for k in range(words.shape[-1]):
            target = words[..., k]
            keep = target != IGNORE_INDEX
            if keep.any():
                total = total + F.cross_entropy((vision[keep] @ table.T).float(), target[keep], reduction="sum")
                total = total + F.cross_entropy(self.vlm.lm_head(states[keep]).float(), target[keep], reduction="sum")
        count = (words != IGNORE_INDEX).sum().clamp(min=1) if denominator is None else denominator
        return total / count

    # ---- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 32, use_cache: bool = True) -> Generation:
        """Greedy decoding of left-padded prompts (Collator(..., for_generation=True)), or of several questions per
        video (Collator.grouped(..., for_generation=True)): each video's prefix is computed once and its keys /
        values serve all its questions. The situation heads read the prompt pass. use_cache=False recomputes the
        whole sequence each step (the reference for the cache; one sequence per question only)."""
        if batch.labels is not None:
            raise Loc3rError("generate() takes prompt-only batches: build them with Collator(..., for_generation=True)")
        if batch.grouped:
            if not use_cache:
                raise Loc3rError("generate(use_cache=False) needs one sequence per question (Collator, not grouped)")
            prefix_mask, video_index = batch.attention_mask, batch.video_index
            prefix = self.language_model(self.embed_inputs(batch), prefix_mask, position_ids_from_mask(prefix_mask),
                                         use_cache=True)
            video_layout = self.layout_head(self.vision_states(prefix.last_hidden_state, batch.input_ids))
            layout = GaussianXY(video_layout.mu[video_index], video_layout.log_sigma[video_index])
            cache = prefix.past_key_values
            cache.batch_select_indices(video_index)
            attention_mask = torch.cat([prefix_mask[video_index], batch.suffix_mask], 1)
            position_ids = position_ids_from_mask(attention_mask)
            embeds = self.embed_text(batch.suffix_ids)
            out = self.language_model(embeds, attention_mask, position_ids[:, prefix_mask.shape[1]:], cache, True)
        else:
            attention_mask = batch.attention_mask
            position_ids = position_ids_from_mask(attention_mask)
            embeds = self.embed_inputs(batch)
            out = self.language_model(embeds, attention_mask, position_ids, use_cache=use_cache)
            layout = self.layout_head(self.vision_states(out.last_hidden_state, batch.input_ids))
        position, orientation_logits = self.situation_heads(out.last_hidden_state, batch)

        B = embeds.shape[0]
        stop = torch.tensor(self.stop_token_ids, device=embeds.device)
        done = torch.zeros(B, dtype=torch.bool, device=embeds.device)
        tokens = []
        for step in range(max_new_tokens):
            next_token = self.vlm.lm_head(out.last_hidden_state[:, -1]).argmax(-1)  # [B]
            next_token = next_token.masked_fill(done, self.pad_token_id)
            tokens.append(next_token)
            done |= torch.isin(next_token, stop)
            if done.all() or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
            position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], 1)
            new = self.embed_text(next_token)[:, None]  # [B, 1, D]
            if use_cache:
                out = self.language_model(new, attention_mask, position_ids[:, -1:], out.past_key_values, True)
            else:
                embeds = torch.cat([embeds, new], 1)
                out = self.language_model(embeds, attention_mask, position_ids)
        token_ids = torch.stack(tokens, 1) if tokens else torch.zeros(B, 0, dtype=torch.long, device=embeds.device)
        return Generation(token_ids, position, orientation_logits, layout)

    @torch.no_grad()
    def predict(self, batch: Batch, max_new_tokens: int = 32) -> list[Prediction]:
        """Answer text, position (x, y) +- sigma and yaw with its bin distribution, one per sample."""
        g = self.generate(batch, max_new_tokens)
        probs = torch.softmax(g.orientation_logits.float(), -1)  # [B, bins]
        yaw = circular_soft_argmax(probs)
        sigma = torch.exp(g.position.log_sigma.float()).clamp(min=self.config.sigma_floor)
        stop = set(self.stop_token_ids)
        out = []
        for b in range(g.token_ids.shape[0]):
            ids = g.token_ids[b].tolist()
            ids = ids[:next((i for i, t in enumerate(ids) if t in stop), len(ids))]
            out.append(Prediction(answer=self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                                  position_xy=g.position.mu[b].float().cpu().numpy(),
                                  position_sigma=sigma[b].cpu().numpy(), yaw_rad=float(yaw[b]),
                                  yaw_probs=probs[b].cpu().numpy(),
                                  layout_xy=g.layout.mu[b].float().cpu().numpy()))
        return out

    # ---- checkpoints --------------------------------------------------------------------------------------
    def checkpoint_tensors(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """state_dict (or `state`, e.g. FSDP's gathered one) without the second name of tied tensors (lm_head.weight
        when embeddings are tied), LoRA adapters merged into plain weights: W + (B A) * alpha / r."""
        own = state is None
        state = self.state_dict() if own else state
        if self.has_lora:
            state = merge_lora(state, self.lora_scaling)
        seen, out = set(), {}
        for name, t in state.items():
            if not own:
                out[name] = t
            elif t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                out[name] = t
        return out

    def save_pretrained(self, path: str | Path, tensors: dict[str, torch.Tensor] | None = None) -> None:
        """config.json + model.safetensors + tokenizer files, written atomically (a crash leaves the old one).
        `tensors` replaces checkpoint_tensors() (the trainer passes full tensors gathered from FSDP shards)."""
        tensors = self.checkpoint_tensors() if tensors is None else tensors
        with atomic_dir(path) as tmp:
            config = self.config.to_dict() | {"base_model_path": None}  # the weights are in this directory now
            write_json(tmp / "config.json", config)
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                      metadata={"format": "pt"})
            self.tokenizer.save_pretrained(str(tmp))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Loc3R":
        path = Path(path)
        config = Loc3RConfig.load(path / "config.json")
        if not (path / "model.safetensors").is_file():
            raise Loc3rError(f"{path / 'model.safetensors'}: no such file")
        tokenizer = load_tokenizer(path)
        with no_init_weights():  # every tensor is overwritten below
            model = cls(config, tokenizer)
        model.load_tensors(path / "model.safetensors")
        return model

    def load_tensors(self, file: Path) -> None:
        """Copy a checkpoint's tensors in by name, checking that every one is present and of the right shape."""
        self._copy_tensors(Path(file), every=True)

    def load_base(self, path: str | Path) -> list[str]:
        """Start from a pretrained base (a Loc3R checkpoint of the same VLM: `loc3r pretrain-base`'s): copy every
        tensor of the base that this model has. Returns the names of this model's tensors the base lacks (the
        camera projector of a base trained without camera tokens); a tensor of another shape is an error."""
        file = Path(path) / "model.safetensors"
        if not file.is_file():
            raise Loc3rError(f"{file}: no such file (not a Loc3R checkpoint)")
        return self._copy_tensors(file, every=False)

    @torch.no_grad()
    def _copy_tensors(self, file: Path, every: bool) -> list[str]:
        """Copy the tensors of safetensors `file` into this model by name, each checked for its shape. `every`:
        the file must hold exactly this model's tensors; else the ones both have are copied. Returns the names of
        this model's tensors the file lacks."""
        expected = self.checkpoint_tensors()
        try:
            with safe_open(str(file), framework="pt") as f:
                keys = set(f.keys())
                missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
                if every and (missing or unexpected):
                    what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}"
                    raise Loc3rError(f"{file}: {what} ({len(missing)} missing, {len(unexpected)} unexpected)")
                for name in sorted(keys & set(expected)):
                    target = expected[name]
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != tuple(target.shape):
                        raise Loc3rError(f"{file}: tensor {name} has shape {shape}, expected {tuple(target.shape)}")
                    target.copy_(f.get_tensor(name))
        except SafetensorError as e:
            raise Loc3rError(f"{file}: not a readable safetensors file ({e})") from e
        return missing


# LoRA targets (peft regex on names inside the LLM): the attention and MLP projections of every decoder layer
LORA_TARGETS = r"layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


def merge_lora(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA layers (`X.base_layer.weight`, `X.lora_A.default.weight` [r, in],
    `X.lora_B.default.weight` [out, r]) as plain weights: X.weight = W + B @ A * scaling (peft's merge)."""
    out = {}
    for name, t in state.items():
        if ".lora_" in name:
            continue
        if ".base_layer." in name:
            prefix, leaf = name.split(".base_layer.")
            name = f"{prefix}.{leaf}"
            if leaf == "weight":
                a, b = state[f"{prefix}.lora_A.default.weight"], state[f"{prefix}.lora_B.default.weight"]
                t = (t.float() + (b.float() @ a.float()) * scaling).to(t.dtype)
        out[name] = t
    return out


# ---- building the base VLM --------------------------------------------------------------------------------
def _default_tokenizer(config: Loc3RConfig) -> PreTrainedTokenizerBase:
    """The base model's tokenizer; for a fresh tiny model one of the prompt's own words only (the trainer passes
    one built from its data: loc3r.train.tiny_tokenizer)."""
    if config.base_model_path is not None:
        return load_tokenizer(config.base_model_path)
    return build_tiny_tokenizer([])


def _build_vlm(config: Loc3RConfig, tokenizer) -> LlavaOnevisionForConditionalGeneration:
    """The LlavaOnevision of the config: pretrained weights from base_model_path, else built from config.vlm.
    The tokenizer gets <Pos>/<Ori> and the embeddings grow to match; config.vlm is updated to the result."""
    dtype = getattr(torch, config.dtype)
    if config.base_model_path is not None:
        old_vocab = len(tokenizer)
        vlm = LlavaOnevisionForConditionalGeneration.from_pretrained(config.base_model_path, dtype=dtype)
        new_ids = [i for i in add_situation_tokens(tokenizer) if i >= old_vocab]
        if len(tokenizer) > vlm.get_input_embeddings().num_embeddings:
            vlm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():  # new tokens start at the mean embedding (rows past the old vocabulary are padding)
            for emb in {vlm.get_input_embeddings().weight, vlm.get_output_embeddings().weight}:
                emb[new_ids] = emb[:old_vocab].float().mean(0).to(emb.dtype)
    else:
        vlm_config = LlavaOnevisionConfig.from_dict(config.vlm)
        if vlm_config.text_config.vocab_size < len(tokenizer):  # a fresh tiny model: one row per token
            vlm_config.text_config.vocab_size = len(tokenizer)
        # _from_config allocates in `dtype` directly (a 7B checkpoint is never materialised in float32)
        vlm = LlavaOnevisionForConditionalGeneration._from_config(vlm_config, dtype=dtype)
        vlm.tie_weights()  # post_init ties lm_head to the embeddings, except under no_init_weights (from_pretrained)
    config.vlm = vlm.config.to_dict()
    if tokenizer.convert_tokens_to_ids(VIDEO_TOKEN) != config.video_token_id:
        raise Loc3rError(f"tokenizer's {VIDEO_TOKEN} id {tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)} differs from "
                         f"the model's video_token_index {config.video_token_id}")
    return vlm
