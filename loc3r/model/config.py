"""Loc3R-VLM configuration: one dataclass, two presets (`tiny`, `llava_video_7b`), derived sizes as properties.

The base VLM (SigLIP vision tower, projector, Qwen2 LLM) is transformers' LlavaOnevision; its config lives
inline in `vlm` (a `LlavaOnevisionConfig.to_dict()`), so a saved checkpoint needs nothing but its own directory.
Loss weights, orientation bins and frame counts default to the paper (Sec. 3.4, 4.1).

The orientation target's sigma is not published. The 7B defaults to one bin width (2pi/36 = 10 deg ~ 0.175 rad):
the target then covers ~5 bins (+-2 sigma), which keeps the KL smooth across bin and +-pi boundaries, and the
circular soft-argmax of the target itself recovers the true yaw to float precision (half a bin: biased towards bin
centres by up to 0.23 deg; a quarter bin: 2.7 deg). The tiny preset uses 60 deg, picked on synthetic validation
rooms (`benchmarks/sweep_orientation_sigma.py`, README): with the demo's recipe (beta-NLL, the loop starts) the
orientation took off at 10, 30 and 60 deg on both training seeds, and 60 deg had the best mean on every metric (Acc@15 /
30 deg 69.5 / 91.0 against 62.8 / 89.6 at 30 and 64.6 / 90.3 at 10, Acc@1.0m 80.8 against 76.2 and 74.5); before
them, with the plain NLL, 10 deg took off in one seed of two and 30 deg was picked. It is a config value
(`loc3r train --orientation-sigma`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loc3r.errors import Loc3rError, naming

PRIORS = ("poses", "cut3r", "none")
NEWLINE_LAYOUTS = ("grid", "one_token")
POOL_MODES = ("bilinear", "average")


@dataclass
class Loc3RConfig:
    vlm: dict = field(default_factory=dict)  # LlavaOnevisionConfig.to_dict(): vision tower, projector, LLM
    base_model_path: str | None = None  # local HF directory of the initial VLM weights + tokenizer; None: `vlm` only
    prior: str = "poses"  # camera-token prior: 'poses' (known poses) | 'cut3r' (cached CUT3R tokens) | 'none'
    cut3r_dim: int = 768  # width of a CUT3R camera token (768 for the released checkpoints; train reads the cache's)
    cut3r_input: str = "demo"  # frames CUT3R sees: "demo" (official demo, 512 long side) | "vlm3r" (432 x 432)
    num_frames: int = 32  # T, uniformly sampled frames per video
    # Where `image_newline` goes. "grid": after every row of every frame, as LLaVA-Video-7B was trained
    # (mm_newline_position "grid", LLaVA-NeXT llava/model/llava_arch.py add_token_per_grid); "one_token": once after
    # the whole video, as transformers' LlavaOnevision.get_video_features does.
    newline_layout: str = "grid"
    # 2x2 pooling of the patch grid. "bilinear": LLaVA-Video's training default (mm_spatial_pool_mode, 27 -> 14
    # tokens a side, LLaVA-NeXT get_2dPool); "average": avg_pool2d of stride 2 (27 -> 13), what lmms-eval's
    # llava_vid forces at evaluation: for comparing with numbers measured that way.
    pool_mode: str = "bilinear"
    # LLaVA-Video's time instruction before the situation (LLaVA-NeXT llava/train/train.py, add_time_instruction)
    time_instruction: bool = False
    video_fps: float = 30.0  # frame rate of frame-folder videos (ScanNet's sensor streams: 30 Hz), for the timestamps
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # pixel normalisation of the vision tower (SigLIP: 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # x_norm = (x / 255 - mean) / std
    orientation_bins: int = 36  # number of yaw bins of the orientation head
    orientation_sigma_rad: float = 2 * math.pi / 36  # sigma of the wrapped-Gaussian yaw target (not published; see top)
    sigma_floor: float = 0.01  # metres, lower bound of the Gaussian NLL's sigma (layout and position)
    # beta-NLL (Seitzer et al., ICLR 2022): each Gaussian NLL term (layout, position) weighted by sigma^(2 beta),
    # the weight without gradient. Same minimisers as the NLL (the logged loss stays the NLL); the mean's gradient
    # no longer shrinks as 1 / sigma^2 where the head is unsure. 0: the paper's NLL
    nll_beta: float = 0.0
    lambda_layout: float = 0.05  # weight of the layout reconstruction loss
    lambda_situation: float = 0.075  # weight of the situation loss L_pos + lambda_orientation * L_ori
    lambda_orientation: float = 3.5  # weight of the orientation KL inside the situation loss
    train_vision_tower: bool = False  # the paper keeps SigLIP frozen; the tiny preset trains it (random init)
    max_text_tokens: int = 256  # longest situation + question (tokens) the collate accepts
    dtype: str = "float32"  # parameter dtype: 'float32' | 'bfloat16' | 'float16'

    def __post_init__(self):
        for name, value, allowed in (("prior", self.prior, PRIORS), ("newline_layout", self.newline_layout,
                                     NEWLINE_LAYOUTS), ("pool_mode", self.pool_mode, POOL_MODES)):
            if value not in allowed:
                raise Loc3rError(f"unknown {name} {value!r}: expected one of {', '.join(allowed)}")
        if not self.video_fps > 0:
            raise Loc3rError(f"video_fps must be positive, got {self.video_fps}")
        if not 0 <= self.nll_beta <= 1:
            raise Loc3rError(f"nll_beta must be in [0, 1], got {self.nll_beta}")
        if not self.vlm:
            raise Loc3rError("Loc3RConfig needs the base VLM's config `vlm`: use Loc3RConfig.tiny() or "
                             "Loc3RConfig.llava_video_7b(path)")
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)

    # ---- derived sizes ------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the square frames the vision tower takes, pixels."""
        return int(self.vlm["vision_config"]["image_size"])

    @property
    def patch_grid(self) -> int:
        """Patches a side of one frame: S // patch (SigLIP-384/14: 27; its last 6 pixel rows and columns are unused)."""
        return self.image_size // self.vlm["vision_config"]["patch_size"]

    @property
    def frame_grid(self) -> tuple[int, int]:
        """(gh, gw) of the pooled vision-token grid of one frame: bilinear pooling resizes the patch grid to
        ceil(p / 2) (27 -> 14), average pooling of stride 2 drops an odd last row and column (27 -> 13)."""
        p = self.patch_grid
        g = math.ceil(p / 2) if self.pool_mode == "bilinear" else p // 2
        return g, g

    @property
    def frame_grid_extent(self) -> float:
        """Fraction of the frame's side the token grid covers: 378 / 384 for SigLIP-384/14 with bilinear pooling
        (all 27 patches), 364 / 384 with average pooling (26 patches); 1 for the tiny preset."""
        p, patch = self.patch_grid, self.vlm["vision_config"]["patch_size"]
        covered = p if self.pool_mode == "bilinear" else 2 * (p // 2)
        return covered * patch / self.image_size

    @property
    def tokens_per_frame(self) -> int:
        """n, vision tokens per frame (row-major over `frame_grid`)."""
        gh, gw = self.frame_grid
        return gh * gw

    @property
    def has_camera_token(self) -> bool:
        return self.prior != "none"

    @property
    def prior_dim(self) -> int:
        """Width of one camera token before the camera projector (0 without a prior)."""
        from loc3r.priors.poses import PosesPrior

        return {"poses": PosesPrior.dim, "cut3r": self.cut3r_dim, "none": 0}[self.prior]

    @property
    def frame_block_len(self) -> int:
        """Tokens of one frame in the video block: (camera token +) G rows of G vision tokens (+ a newline each
        with the grid layout)."""
        gh, gw = self.frame_grid
        return int(self.has_camera_token) + gh * (gw + int(self.newline_layout == "grid"))

    @property
    def video_placeholder_len(self) -> int:
        """Length of the <video> run: T frame blocks (+ one final newline with the one_token layout)."""
        return self.num_frames * self.frame_block_len + int(self.newline_layout == "one_token")

    def vision_token_slots(self) -> np.ndarray:
        """[T, n] int64: the position of every vision token (frame t, row-major over frame_grid) in the video
        block; the camera and newline tokens are the other positions. Layout targets and the layout head use these.
            grid:      [cam_1, row_1, nl, row_2, nl, ..., row_G, nl, cam_2, ...]
            one_token: [cam_1, row_1, ..., row_G, cam_2, ..., row_G, nl]"""
        gh, gw = self.frame_grid
        row_len = gw + int(self.newline_layout == "grid")
        within = int(self.has_camera_token) + (np.arange(gh)[:, None] * row_len + np.arange(gw)[None]).reshape(-1)
        return (np.arange(self.num_frames)[:, None] * self.frame_block_len + within[None]).astype(np.int64)

    @property
    def hidden_size(self) -> int:
        return int(self.vlm["text_config"]["hidden_size"])

    @property
    def video_token_id(self) -> int:
        return int(self.vlm["video_token_index"])

    # ---- presets ------------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides) -> "Loc3RConfig":
        """~3M parameters, random init, 64 px frames (8 px patches -> 8x8 -> pooled 4x4 = 16 tokens), 8 frames."""
        from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

        from loc3r.constants import VIDEO_TOKEN
        from loc3r.model.tokenizer import TINY_SPECIAL_TOKENS

        vision = SiglipVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=64, patch_size=8, vision_use_head=False)
        # vocab_size grows to the tokenizer's size when the model is built (the word list decides it)
        text = Qwen2Config(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=6,
                           num_key_value_heads=2, vocab_size=len(TINY_SPECIAL_TOKENS), max_position_embeddings=4096,
                           tie_word_embeddings=True)
        vlm = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                   image_token_index=TINY_SPECIAL_TOKENS.index("<image>"),
                                   video_token_index=TINY_SPECIAL_TOKENS.index(VIDEO_TOKEN),
                                   vision_feature_layer=-1, vision_feature_select_strategy="full",
                                   tie_word_embeddings=True)
        # Spatial loss weights of 1 instead of the paper's 0.05 / 0.075: the paper's weights balance a pretrained
        # 7B whose LM loss starts low; a model trained from scratch on a CPU barely moves its spatial heads with
        # them. Measured on 200 synthetic rooms after ~500 steps of batch 8: with the paper's layout weight the
        # layout NLL stayed at ~1.1 and the predicted positions were nearly constant (std 0.1 m); with weights 1
        # the layout NLL fell to ~0.3 and predicted positions correlated 0.57 with the truth on validation scenes.
        # The orientation target's sigma: 60 deg, picked on validation rooms (see the top of this module).
        # beta-NLL (nll_beta 0.5) for the layout and position: with the plain NLL, a run whose vision tokens placed
        # themselves in the BEV only in the last layers (ridge R^2 0.12 after layer 0, against 0.77 in a run that
        # localized) settled on a coarse direction and never used where the speaker stands (README).
        fields = dict(vlm=vlm.to_dict(), num_frames=8, train_vision_tower=True, lambda_layout=1.0,
                      lambda_situation=1.0, orientation_sigma_rad=math.radians(60), nll_beta=0.5)
        return cls(**{**fields, **overrides})

    @classmethod
    def llava_video_7b(cls, path: str | Path, **overrides) -> "Loc3RConfig":
        """The paper's model from a local LLaVA-Video-7B-Qwen2 directory in transformers format; 32 frames, CUT3R."""
        from transformers import LlavaOnevisionConfig

        path = Path(path)
        if not (path / "config.json").is_file():
            raise Loc3rError(f"{path / 'config.json'}: no such file (expected a LLaVA-Video directory in HF format)")
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type != "llava_onevision":
            raise Loc3rError(f"{path / 'config.json'}: model_type is {model_type!r}, not 'llava_onevision' "
                             "(an original LLaVA-NeXT release must first be converted to the transformers format)")
        try:
            vlm = LlavaOnevisionConfig.from_pretrained(str(path))
        except (OSError, ValueError, TypeError) as e:
            raise Loc3rError(f"{path / 'config.json'}: not a LlavaOnevision config ({e})") from e
        fields = dict(vlm=vlm.to_dict(), base_model_path=str(path), prior="cut3r", num_frames=32, dtype="bfloat16",
                      newline_layout="grid", pool_mode="bilinear", time_instruction=True)
        fields.update(**_pixel_normalisation(path), **_llava_next_video_settings(path))
        return cls(**{**fields, **overrides})

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Loc3RConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise Loc3rError(f"{source}: unknown Loc3RConfig field(s) {', '.join(unknown)}"
                             + (" (a tiny model's base settings: loc3r.tiny.TinyLoc3R loads it)"
                                if "tiny_base" in unknown else ""))
        # checkpoints written before the field existed were built with transformers' layout
        with naming(source):
            return cls(**{"newline_layout": "one_token", **d})

    @classmethod
    def load(cls, path: str | Path) -> "Loc3RConfig":
        return cls.from_dict(read_config_json(path), source=str(path))


def read_config_json(path: str | Path) -> dict:
    """A checkpoint's config.json as a dict (a one-line error when it is missing or not a JSON object)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise Loc3rError(f"{path}: no such file (not a Loc3R checkpoint?)") from None
    except json.JSONDecodeError as e:
        raise Loc3rError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise Loc3rError(f"{path}: not a JSON object")
    return d


def _pixel_normalisation(path: Path) -> dict:
    """image_mean / image_std of a HF directory's (video) preprocessor config; SigLIP's 0.5 when absent."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        f = path / name
        if f.is_file():
            d = json.loads(f.read_text())
            if "image_mean" in d and "image_std" in d:
                return dict(image_mean=tuple(d["image_mean"]), image_std=tuple(d["image_std"]))
    return {}


def _llava_next_video_settings(path: Path) -> dict:
    """newline_layout / pool_mode / time_instruction as LLaVA-NeXT's config of the converted release says
    (loc3r convert-llava-video keeps it in loc3r_source.json); {} (the defaults: grid, bilinear, time) without."""
    f = path / "loc3r_source.json"
    if not f.is_file():
        return {}
    settings = json.loads(f.read_text()).get("video_settings", {})
    out = {}
    if "mm_newline_position" in settings:
        if settings["mm_newline_position"] not in NEWLINE_LAYOUTS:
            raise Loc3rError(f"{f}: mm_newline_position {settings['mm_newline_position']!r} is not supported "
                             f"(supported: {', '.join(NEWLINE_LAYOUTS)})")
        out["newline_layout"] = settings["mm_newline_position"]
    if "mm_spatial_pool_mode" in settings:
        if settings["mm_spatial_pool_mode"] not in POOL_MODES or settings.get("mm_spatial_pool_stride", 2) != 2:
            raise Loc3rError(f"{f}: pooling {settings['mm_spatial_pool_mode']!r} of stride "
                             f"{settings.get('mm_spatial_pool_stride', 2)} is not supported (supported: "
                             f"{', '.join(POOL_MODES)}, stride 2)")
        out["pool_mode"] = settings["mm_spatial_pool_mode"]
    if "add_time_instruction" in settings:
        out["time_instruction"] = bool(settings["add_time_instruction"])
    return out
