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

import dataclasses
import errno
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
from loc3r.model.config import Loc3RConfig, read_config_json
from loc3r.model.frame_features import FrameFeatures
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
class Encoded:
    """The LLM's pass over a training batch."""

    vision: torch.Tensor  # [B or Bv, T, gh, gw, D] the pooled vision tokens as they enter the LLM
    video_hidden: torch.Tensor  # [B or Bv, L, D] final hidden states of the sequences holding the videos
    text_hidden: torch.Tensor  # [B or Bq, L, D] final hidden states of the sequences holding the questions


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

    def as_record(self) -> dict:
        """The prediction as `loc3r infer --json` and eval's predictions.jsonl write it (docs/outputs.md): metres and
        degrees in the video's BEV frame; yaw_probs[b] the probability of the bin centred at -180 + (b + 0.5) * 360 /
        bins degrees."""
        return {"answer": self.answer, "position_xy_m": [float(v) for v in self.position_xy],
                "position_sigma_m": [float(v) for v in self.position_sigma],
                "yaw_deg": float(np.degrees(self.yaw_rad)), "yaw_probs": [float(v) for v in self.yaw_probs]}


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
        self.layout_head = LayoutHead(D)
        self.position_head = PositionHead(D)
        self.orientation_head = OrientationHead(D, config.orientation_bins)
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
        # the frozen vision tower's features kept by frame (keep_frame_features: a training run on a CPU)
        self.frame_features: FrameFeatures | None = None
        # the LLM's matrix products under torch.autocast in this dtype (None: the weights'): a training run on a CPU
        # with AMX sets bf16 (parallel.cpu_autocast); its norms, residual stream, attention and the heads stay fp32
        self.llm_autocast: torch.dtype | None = None

    def keep_frame_features(self, max_bytes: int) -> bool:
        """Keep the vision tower's features of each frame it sees (up to max_bytes), where that gives what the tower
        would: a frozen tower without dropout, on the CPU. Returns whether they are kept."""
        tower = self.vlm.model.vision_tower
        frozen = not any(p.requires_grad for p in tower.parameters())
        dropout = getattr(self.vlm.config.vision_config, "attention_dropout", 0.0)
        cpu = all(p.device.type == "cpu" for p in tower.parameters())
        self.frame_features = FrameFeatures(max_bytes) if frozen and not dropout and cpu else None
        return self.frame_features is not None

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

    def tower_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The vision tower's features [N, p * p, C] of normalised frames [N, 3, S, S] (the configured layer)."""
        model = self.vlm.model
        out = model.vision_tower(frames, output_hidden_states=True)
        layer = model.config.vision_feature_layer
        features = (out.hidden_states[layer] if isinstance(layer, int)
                    else torch.cat([out.hidden_states[i] for i in layer], -1))
        if model.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]
        return features

    def vision_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected, pooled vision tokens [B, T, gh, gw, D] of normalised frames [B, T, 3, S, S]."""
        model, c = self.vlm.model, self.config
        B, T = pixels.shape[:2]
        frames = pixels.flatten(0, 1).to(self.vlm.dtype)
        features = (self.tower_features(frames) if self.frame_features is None
                    else self.frame_features(frames, self.tower_features))
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
        """The token embeddings of `ids` as the LLM takes them."""
        return self.vlm.get_input_embeddings()(ids)

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
        with torch.autocast(embeds.device.type, self.llm_autocast, enabled=self.llm_autocast is not None):
            return self.vlm.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                                 position_ids=position_ids, past_key_values=past_key_values,
                                                 use_cache=use_cache)

    def situation_heads(self, hidden: torch.Tensor, batch: Batch) -> tuple[GaussianXY, torch.Tensor]:
        """Position Gaussian [B, 2] and orientation logits [B, bins] from the <Pos> / <Ori> final states."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (self.position_head(hidden[rows, batch.pos_index]),
                self.orientation_head(hidden[rows, batch.ori_index]))

    # ---- training -----------------------------------------------------------------------------------------
    def loss_counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Entries each loss averages over in this batch: answer tokens, valid layout coordinates (x and y),
        situated position coordinates, situated samples. The default denominators of `forward`."""
        situated = batch.has_situation.sum()
        return {"lm": (batch.labels[:, 1:] != IGNORE_INDEX).sum(), "layout": 2 * batch.layout_valid.sum(),
                "position": 2 * situated, "orientation": situated}

    def denominators(self, batch: Batch, given: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """What each loss is divided by: `given` (the trainer's counts over a whole optimizer step), else this batch's
        own counts (at least 1)."""
        return given or {k: v.clamp(min=1) for k, v in self.loss_counts(batch).items()}

    def shared_prefix_pass(self, batch: Batch, vision: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM over a grouped batch (Collator.grouped): the video prefixes once [Bv, Lp], then every question's
        suffix [Bq, Ls] against its video's keys / values (gradients flow back into the shared prefix).
        Returns the final hidden states of the prefixes [Bv, Lp, D] and of the suffixes [Bq, Ls, D]. Equal to
        running each question's whole sequence (tests/test_shared_prefix.py)."""
        prefix_mask = batch.attention_mask  # [Bv, Lp]
        prefix = self.language_model(self.embed_inputs(batch, vision), prefix_mask, position_ids_from_mask(prefix_mask),
                                     use_cache=True)
        cache = prefix.past_key_values
        # each question gets its video's keys / values: reorder_cache selects them with index_select, whose gradient
        # (an index_add) is ~17x faster on a CPU than that of batch_select_indices' indexing (an accumulating
        # index_put), and the same sums (~6% of a 6-layer tiny step)
        cache.reorder_cache(batch.video_index)
        mask = torch.cat([prefix_mask[batch.video_index], batch.suffix_mask], 1)  # [Bq, Lp + Ls]
        position_ids = position_ids_from_mask(mask)[:, prefix_mask.shape[1]:]
        text = self.embed_text(batch.suffix_ids)
        out = self.language_model(text, mask, position_ids, past_key_values=cache)
        return prefix.last_hidden_state, out.last_hidden_state

    def encode(self, batch: Batch) -> Encoded:
        """The LLM over a training batch: one sequence per question (Collator) or several questions per video
        (Collator.grouped, the shared-prefix pass)."""
        vision = self.vision_tokens(batch.pixel_values_videos)  # [B or Bv, T, gh, gw, D]
        if batch.grouped:
            video_hidden, text_hidden = self.shared_prefix_pass(batch, vision)  # [Bv, Lp, D], [Bq, Ls, D]
        else:
            mask = batch.attention_mask
            text_hidden = video_hidden = self.language_model(self.embed_inputs(batch, vision), mask,
                                                             position_ids_from_mask(mask)).last_hidden_state
        return Encoded(vision, video_hidden, text_hidden)

    def forward(self, batch: Batch, loss_denominators: dict[str, torch.Tensor] | None = None) -> Loc3ROutput:
        """Losses of a training batch. `loss_denominators` (see loss_counts) replace the batch's own counts, so that
        the trainer can normalise by the counts of a whole optimizer step."""
        return self.losses(batch, self.encode(batch), loss_denominators)

    def losses(self, batch: Batch, encoded: Encoded,
               loss_denominators: dict[str, torch.Tensor] | None = None) -> Loc3ROutput:
        """L = L_ce + lambda_layout * L_layout + lambda_situation * (L_pos + lambda_orientation * L_ori)."""
        c = self.config
        den = self.denominators(batch, loss_denominators)

        # LM cross-entropy on the answer tokens: the state at i predicts label i + 1
        targets = batch.labels[:, 1:]  # [B, L-1]
        supervised = targets != IGNORE_INDEX
        logits = self.vlm.lm_head(encoded.text_hidden[:, :-1][supervised])  # [N, V]
        lm = F.cross_entropy(logits.float(), targets[supervised], reduction="sum") / den["lm"]

        layout = self.layout_head(self.vision_states(encoded.video_hidden, batch.input_ids))  # [B, T, n, 2] x2
        position, orientation_logits = self.situation_heads(encoded.text_hidden, batch)
        situated = batch.has_situation  # [B] bool
        yaw_target = wrapped_gaussian_target(batch.yaw_rad, c.orientation_bins, c.orientation_sigma_rad)
        nll_terms = {"layout": (*layout, batch.layout_xy, batch.layout_valid, c.sigma_floor, den["layout"]),
                     "position": (*position, batch.position_xy, situated, c.sigma_floor, den["position"])}
        losses = {"lm": lm, **{name: gaussian_nll(*args) for name, args in nll_terms.items()},
                  "orientation": kl_orientation(orientation_logits, yaw_target, situated, den["orientation"])}
        # what the gradient follows: with nll_beta the beta-NLL terms; `losses` logs the NLL either way
        spatial = {name: gaussian_nll(*args, c.nll_beta) for name, args in nll_terms.items()} if c.nll_beta else losses
        loss = (lm + c.lambda_layout * spatial["layout"]
                + c.lambda_situation * (spatial["position"] + c.lambda_orientation * losses["orientation"]))
        return Loc3ROutput(loss, losses, layout, position, orientation_logits)

    # ---- inference ----------------------------------------------------------------------------------------
    def prompt_pass(self, batch: Batch, use_cache: bool, hide_situation_tokens: bool) -> tuple:
        """The LLM over generate()'s prompts (see there): its output at the prompts' tokens, the layout Gaussian of
        each question's video, and the attention mask, position ids and text embeddings decoding continues from."""
        if batch.grouped:
            if not use_cache:
                raise Loc3rError("generate(use_cache=False) needs one sequence per question (Collator, not grouped)")
            prefix_mask, video_index = batch.attention_mask, batch.video_index
            prefix = self.language_model(self.embed_inputs(batch), prefix_mask, position_ids_from_mask(prefix_mask),
                                         use_cache=True)
            video_layout = self.layout_head(self.vision_states(prefix.last_hidden_state, batch.input_ids))
            layout = GaussianXY(video_layout.mu[video_index], video_layout.log_sigma[video_index])
            cache = prefix.past_key_values
            cache.reorder_cache(video_index)  # each question's video's keys / values (as in shared_prefix_pass)
            attention_mask = torch.cat([prefix_mask[video_index], batch.suffix_mask], 1)
            position_ids = position_ids_from_mask(attention_mask)
            if hide_situation_tokens:
                attention_mask = self.without_situation_keys(attention_mask, batch, prefix_mask.shape[1])
            embeds = self.embed_text(batch.suffix_ids)
            out = self.language_model(embeds, attention_mask, position_ids[:, prefix_mask.shape[1]:], cache, True)
        else:
            attention_mask = batch.attention_mask
            position_ids = position_ids_from_mask(attention_mask)
            if hide_situation_tokens:
                attention_mask = self.without_situation_keys(attention_mask, batch, 0)
            embeds = self.embed_inputs(batch)
            out = self.language_model(embeds, attention_mask, position_ids, use_cache=use_cache)
            layout = self.layout_head(self.vision_states(out.last_hidden_state, batch.input_ids))
        return out, layout, attention_mask, position_ids, embeds

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 32, use_cache: bool = True,
                 hide_situation_tokens: bool = False) -> Generation:
        """Greedy decoding of left-padded prompts (Collator(..., for_generation=True)), or of several questions per
        video (Collator.grouped(..., for_generation=True)): each video's prefix is computed once and its keys /
        values serve all its questions. The situation heads read the prompt pass. use_cache=False recomputes the
        whole sequence each step (the reference for the cache; one sequence per question only).
        hide_situation_tokens: a control of what the answers take from the situation tokens: no token attends to
        <Pos> or <Ori> (their keys masked; every position stays where it was), so the question and the answer read
        the situation only from its words. The situation heads then read a second, unhidden pass of the prompts
        (with their keys masked <Pos> would not attend to itself): the control changes the answers only."""
        if batch.labels is not None:
            raise Loc3rError("generate() takes prompt-only batches: build them with Collator(..., for_generation=True)")
        out, layout, attention_mask, position_ids, embeds = self.prompt_pass(batch, use_cache, hide_situation_tokens)
        shown = self.prompt_pass(batch, use_cache, False)[0] if hide_situation_tokens else out
        position, orientation_logits = self.situation_heads(shown.last_hidden_state, batch)

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

    @staticmethod
    def without_situation_keys(attention_mask: torch.Tensor, batch: Batch, offset: int) -> torch.Tensor:
        """attention_mask [B, L] with the <Pos> / <Ori> keys masked (their indices + offset: the prefix's length of
        a grouped batch)."""
        rows = torch.arange(attention_mask.shape[0], device=attention_mask.device)
        hidden = attention_mask.clone()
        hidden[rows, batch.pos_index + offset] = 0
        hidden[rows, batch.ori_index + offset] = 0
        return hidden

    @torch.no_grad()
    def predict(self, batch: Batch, max_new_tokens: int = 32, hide_situation_tokens: bool = False) -> list[Prediction]:
        """Answer text, position (x, y) +- sigma and yaw with its bin distribution, one per sample
        (hide_situation_tokens: see generate)."""
        g = self.generate(batch, max_new_tokens, hide_situation_tokens=hide_situation_tokens)
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
            write_json(tmp / "config.json", self.config_dict())
            try:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                          metadata={"format": "pt"})
            except SafetensorError as e:  # its I/O errors arrive as text: a full disk is the user's to fix
                if "StorageFull" in str(e) or "No space left" in str(e):
                    raise OSError(errno.ENOSPC, "No space left on device", str(path / "model.safetensors")) from None
                raise
            self.tokenizer.save_pretrained(str(tmp))

    def config_dict(self) -> dict:
        """What a checkpoint's config.json holds: the config, without base_model_path (the weights are in the
        checkpoint's directory)."""
        return self.config.to_dict() | {"base_model_path": None}

    @classmethod
    def from_config_dict(cls, fields: dict, tokenizer: PreTrainedTokenizerBase, source: str) -> "Loc3R":
        """A model of the config a checkpoint's config.json holds (config_dict's inverse), weights not loaded."""
        return cls(Loc3RConfig.from_dict(fields, source), tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Loc3R":
        path = Path(path)
        fields = read_config_json(path / "config.json")
        if not (path / "model.safetensors").is_file():
            raise Loc3rError(f"{path / 'model.safetensors'}: no such file")
        tokenizer = load_tokenizer(path)
        with no_init_weights():  # every tensor is overwritten below
            model = cls.from_config_dict(fields, tokenizer, str(path / "config.json"))
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
