"""Loc3R-VLM configuration: one dataclass, two presets (`tiny`, `llava_video_7b`), derived sizes as properties.

The base VLM (SigLIP vision tower, projector, Qwen2 LLM) is transformers' LlavaOnevision; its config lives
inline in `vlm` (a `LlavaOnevisionConfig.to_dict()`), so a saved checkpoint needs nothing but its own directory.
Loss weights, orientation bins and frame counts default to the paper (Sec. 3.4, 4.1).

The orientation target's sigma is not published. We default to one bin width (2pi/36 = 10 deg ~ 0.175 rad):
the target then covers ~5 bins (+-2 sigma), which keeps the KL smooth across bin and +-pi boundaries, and the
circular soft-argmax of the target itself recovers the true yaw to float precision (half a bin: biased towards bin
centres by up to 0.23 deg; a quarter bin: 2.7 deg). It is a config value so that it can be tuned on validation data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from loc3r.errors import Loc3rError

PRIORS = ("poses", "cut3r", "none")


@dataclass
class Loc3RConfig:
    vlm: dict = field(default_factory=dict)  # LlavaOnevisionConfig.to_dict(): vision tower, projector, LLM
    base_model_path: str | None = None  # local HF directory of the initial VLM weights + tokenizer; None: `vlm` only
    prior: str = "poses"  # camera-token prior: 'poses' (known poses) | 'cut3r' (cached CUT3R tokens) | 'none'
    cut3r_dim: int = 768  # width of a CUT3R camera token (768 for the released checkpoints)
    num_frames: int = 32  # T, uniformly sampled frames per video
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # pixel normalisation of the vision tower (SigLIP: 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # x_norm = (x / 255 - mean) / std
    orientation_bins: int = 36  # number of yaw bins of the orientation head
    orientation_sigma_rad: float = 2 * math.pi / 36  # sigma of the wrapped-Gaussian yaw target (not published; see top)
    sigma_floor: float = 0.01  # metres, lower bound of the Gaussian NLL's sigma (layout and position)
    lambda_layout: float = 0.05  # weight of the layout reconstruction loss
    lambda_situation: float = 0.075  # weight of the situation loss L_pos + lambda_orientation * L_ori
    lambda_orientation: float = 3.5  # weight of the orientation KL inside the situation loss
    train_vision_tower: bool = False  # the paper keeps SigLIP frozen; the tiny preset trains it (random init)
    max_text_tokens: int = 256  # longest situation + question (tokens) the collate accepts
    dtype: str = "float32"  # parameter dtype: 'float32' | 'bfloat16' | 'float16'

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise Loc3rError(f"unknown prior {self.prior!r}: expected one of {', '.join(PRIORS)}")
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
    def frame_grid(self) -> tuple[int, int]:
        """(gh, gw) of the pooled vision-token grid of one frame: the patch grid halved by 2x2 bilinear pooling
        (LlavaOnevision's apply_pooling; 384 px / 14 px patches -> 27 -> 14, the last 6 pixel rows are unused: see
        frame_grid_extent)."""
        patches = self.image_size // self.vlm["vision_config"]["patch_size"]
        return math.ceil(patches / 2), math.ceil(patches / 2)

    @property
    def frame_grid_extent(self) -> float:
        """Fraction of the frame's side the token grid covers: (S // patch) * patch / S (378 / 384 for
        SigLIP-384/14, whose patches leave the last 6 pixel rows and columns out; 1 for the tiny preset)."""
        patch = self.vlm["vision_config"]["patch_size"]
        return (self.image_size // patch) * patch / self.image_size

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
    def video_placeholder_len(self) -> int:
        """Length of the <video> run: per frame (camera token +) n vision tokens, then one newline token."""
        return self.num_frames * (self.tokens_per_frame + int(self.has_camera_token)) + 1

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

        from loc3r.model.tokenizer import TINY_SPECIAL_TOKENS, VIDEO_TOKEN

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
        fields = dict(vlm=vlm.to_dict(), num_frames=8, train_vision_tower=True, lambda_layout=1.0,
                      lambda_situation=1.0)
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
                      **_pixel_normalisation(path))
        return cls(**{**fields, **overrides})

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Loc3RConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise Loc3rError(f"{source}: unknown Loc3RConfig field(s) {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "Loc3RConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise Loc3rError(f"{path}: no such file (not a Loc3R checkpoint?)") from None
        except json.JSONDecodeError as e:
            raise Loc3rError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(d, source=str(path))


def _pixel_normalisation(path: Path) -> dict:
    """image_mean / image_std of a HF directory's (video) preprocessor config; SigLIP's 0.5 when absent."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        f = path / name
        if f.is_file():
            d = json.loads(f.read_text())
            if "image_mean" in d and "image_std" in d:
                return dict(image_mean=tuple(d["image_mean"]), image_std=tuple(d["image_std"]))
    return {}
