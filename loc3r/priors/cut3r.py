"""CUT3R camera-token prior: our PyTorch re-implementation of the parts of CUT3R that give each frame's camera token.

Loc3R-VLM prepends to every frame's vision tokens the camera (pose) token that the frozen CUT3R model computes for
that frame. Only the path that produces it runs here: CroCo ViT encoder -> learned state tokens -> two parallel
decoders (image stream with the pose token in front, state stream) -> pose memory read / write -> pose MLP. The
point-map, RGB and ray-map branches of the official model are never built (their weights are dropped when the
official checkpoint is converted, see `cut3r_checkpoint.py`).

Per video (as the official demo): encode all frames in one batch, then for frame i = 0..T-1
    pose_in_i   = pose_token (i = 0) or memory read with mean(feat_i)          # [1, 1, D], position (-1, -1)
    dec_i, S_i  = decoders([pose_in_i, decoder_embed(feat_i)], S_{i-1})        # S_0 = decoder_embed_state(register)
    camera_token_i = dec_norm(dec_i)[:, 0]                                      # what Loc3R-VLM consumes
    memory      = write(memory, mean(feat_i), camera_token_i)
and camera_token_i -> pose MLP -> [tx, ty, tz, qw, qx, qy, qz] camera-to-world (translation 'exp'-scaled).
Parity with the official outputs is tested in tests/test_cut3r.py (atol 3e-5).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from loc3r.errors import Loc3rError
from loc3r.priors.cut3r_blocks import LN_EPS, DecoderBlock, EncoderBlock, Mlp, PatchEmbed, PoseMemory, Rope2D

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "loc3r-cut3r/1"


@dataclass
class Cut3rConfig:
    """Architecture of the camera-token path; defaults are the released 768-state-token CUT3R models."""

    enc_embed_dim: int = 1024  # E: encoder width
    enc_depth: int = 24  # encoder blocks
    enc_num_heads: int = 16  # encoder attention heads
    dec_embed_dim: int = 768  # D: decoder width = camera-token width
    dec_depth: int = 12  # blocks of each of the two decoders
    dec_num_heads: int = 12  # heads of the image decoder and of the pose memory blocks
    state_dec_num_heads: int = 16  # heads of the state decoder (official default; released configs leave it unset)
    state_size: int = 768  # S: learned state tokens
    state_pe: str = "2d"  # state-token RoPE positions: "2d" grid (i // w, i % w) or "1d" diagonal (i, i)
    mem_size: int = 256  # M: pose-memory tokens (official `local_mem_size`)
    mem_depth: int = 2  # read blocks = write blocks of the pose memory
    mlp_ratio: float = 4.0  # MLP hidden width / block width in encoder and decoders
    patch_size: int = 16  # pixels per patch side
    rope_base: float = 100.0  # RoPE2D frequency base ("RoPE100")
    image_size: int = 512  # preprocessing size the checkpoint was trained for: 512 (long edge) or 224 (short edge)
    head_type: str = "dpt"  # official head the checkpoint came with ("dpt" | "linear"); only its pose MLP is kept

    @classmethod
    def tiny(cls) -> "Cut3rConfig":
        """The architecture of test fixture A (64/2/4 encoder, 48/2/4 decoders, 16 state tokens, 64x64 frames)."""
        return cls(enc_embed_dim=64, enc_depth=2, enc_num_heads=4, dec_embed_dim=48, dec_depth=2, dec_num_heads=4,
                   state_dec_num_heads=4, state_size=16, image_size=64, head_type="linear")

    def state_positions(self) -> torch.Tensor:
        """[S, 2] int64 RoPE positions of the state tokens (official `_encode_state`)."""
        i = torch.arange(self.state_size)
        if self.state_pe == "1d":
            return torch.stack([i, i], dim=-1)
        width = int(self.state_size**0.5)
        width += width % 2  # the official grid width is even
        return torch.stack([i // width, i % width], dim=-1)


@dataclass
class Cut3rOutput:
    camera_tokens: torch.Tensor  # [T, D] dec_norm(image stream)[:, 0] per frame
    camera_pose: torch.Tensor  # [T, 7] float32 [tx, ty, tz, qw, qx, qy, qz] camera-to-world, qw >= 0
    c2w: torch.Tensor  # [T, 4, 4] float32 camera-to-world
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)  # enc_feat, pose_in, state (debugging)


class Cut3r(nn.Module):
    """The camera-token path of CUT3R. Parameter names are the official ones, except `pose_head` (officially
    `downstream_head.pose_head.mlp`), so that converted weights load by name."""

    def __init__(self, config: Cut3rConfig):
        super().__init__()
        self.config = config
        c = config
        e, d = c.enc_embed_dim, c.dec_embed_dim
        self.ignored_prefixes: list[str] = []  # official weights dropped at conversion (never run)
        self.patch_embed = PatchEmbed(e, c.patch_size)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(e, c.enc_num_heads, int(e * c.mlp_ratio)) for _ in range(c.enc_depth))
        self.enc_norm = nn.LayerNorm(e, eps=LN_EPS)
        self.register_tokens = nn.Embedding(c.state_size, e)
        self.decoder_embed_state = nn.Linear(e, d)
        self.decoder_embed = nn.Linear(e, d)
        self.pose_token = nn.Parameter(torch.zeros(1, 1, d))
        # the pose memory's MLP ratio is hard-coded to 4 officially, independent of `mlp_ratio`
        self.pose_retriever = PoseMemory(e, d, c.mem_size, c.mem_depth, c.dec_num_heads, 4 * 2 * d)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(d, c.dec_num_heads, int(d * c.mlp_ratio)) for _ in range(c.dec_depth))
        self.dec_blocks_state = nn.ModuleList(
            DecoderBlock(d, c.state_dec_num_heads, int(d * c.mlp_ratio)) for _ in range(c.dec_depth))
        self.dec_norm = nn.LayerNorm(d, eps=LN_EPS)
        self.dec_norm_state = nn.LayerNorm(d, eps=LN_EPS)
        self.pose_head = Mlp(d, 4 * d, 7)  # official `downstream_head.pose_head.mlp` (PoseDecoder, mlp_ratio 4)

    @property
    def dim(self) -> int:
        """Camera-token width D."""
        return self.config.dec_embed_dim

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, 3, H, W] normalised frames -> patch features [T, N, E] and patch positions [1, N, 2]."""
        x, pos = self.patch_embed(images)
        rope = Rope2D(pos, self.config.rope_base)
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return self.enc_norm(x), pos

    def decode(self, state, feat, pose_in, img_rope: Rope2D, state_rope: Rope2D):
        """One frame through both decoders in parallel (each block reads the other stream's previous layer).

        state [1, S, D], feat [1, N, E], pose_in [1, 1, D] -> camera token [1, 1, D], new state [1, S, D].
        """
        img = torch.cat([pose_in, self.decoder_embed(feat)], dim=1)  # [1, 1 + N, D]
        for blk_state, blk_img in zip(self.dec_blocks_state, self.dec_blocks):
            state, img = blk_state(state, img, state_rope, img_rope), blk_img(img, state, img_rope, state_rope)
        return self.dec_norm(img[:, :1]), self.dec_norm_state(state)

    @torch.no_grad()  # a frozen prior (no_grad rather than inference_mode: outputs may feed trainable layers)
    def forward(self, images: torch.Tensor, dtype: torch.dtype = torch.float32,
                keep_intermediates: bool = False) -> Cut3rOutput:
        """Recurrent pass over one video's frames [T, 3, H, W] (in order); `dtype` < float32 runs under autocast."""
        autocast = torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32)
        with autocast:
            feat, pos = self.encode(images)  # [T, N, E]
            # the pose token sits at (-1, -1), in front of the patches
            img_rope = Rope2D(torch.cat([-torch.ones_like(pos[:, :1]), pos], dim=1), self.config.rope_base)
            state_rope = Rope2D(self.config.state_positions()[None].to(images.device), self.config.rope_base)
            state = self.decoder_embed_state(self.register_tokens.weight)[None]  # [1, S, D], not normalised
            mem = self.pose_retriever.mem  # [1, M, 2D]
            tokens, pose_ins, states = [], [], [state]
            for i in range(images.shape[0]):
                feat_i = feat[i: i + 1]  # [1, N, E]
                summary = feat_i.mean(dim=1, keepdim=True)  # [1, 1, E]
                pose_in = self.pose_token if i == 0 else self.pose_retriever.inquire(summary, mem)
                token, state = self.decode(state, feat_i, pose_in, img_rope, state_rope)
                mem = self.pose_retriever.update_mem(mem, summary, token)
                tokens.append(token[:, 0])
                if keep_intermediates:
                    pose_ins.append(pose_in[:, 0])
                    states.append(state)
        camera_tokens = torch.cat(tokens)  # [T, D]
        camera_pose = self.camera_pose(camera_tokens)
        intermediates = {}
        if keep_intermediates:
            intermediates = dict(enc_feat=feat, pose_in=torch.cat(pose_ins), state=torch.cat(states))
        return Cut3rOutput(camera_tokens, camera_pose, pose_to_c2w(camera_pose), intermediates)

    def camera_pose(self, camera_tokens: torch.Tensor) -> torch.Tensor:
        """[T, D] camera tokens -> [T, 7] poses; float32 without autocast, as the official head."""
        with torch.autocast(camera_tokens.device.type, enabled=False):
            raw = self.pose_head(camera_tokens.float())  # [T, 7]
        return postprocess_pose(raw)

    def camera_tokens(self, images: torch.Tensor, dtype: torch.dtype = torch.float32):
        """[T, 3, H, W] normalised frames -> (tokens [T, D], poses [T, 7], c2w [T, 4, 4])."""
        out = self(images, dtype=dtype)
        return out.camera_tokens, out.camera_pose, out.c2w

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> "Cut3r":
        """Load a directory written by `convert_cut3r` (config.json + model.safetensors), strictly, in eval mode."""
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        cfg_path, weights_path = model_dir / CONFIG_NAME, model_dir / WEIGHTS_NAME
        try:
            meta = json.loads(cfg_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r} (run `loc3r convert-cut3r`)")
            with torch.device("meta"):  # no random init: every tensor is replaced by the loaded one
                model = cls(Cut3rConfig(**meta["config"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise Loc3rError(f"{cfg_path}: {e}") from e
        try:
            tensors = load_file(weights_path)
        except Exception as e:  # safetensors raises its own error types for truncated / foreign files
            raise Loc3rError(f"{weights_path}: cannot read safetensors ({e})") from e
        load_weights(model, tensors, weights_path)
        model.ignored_prefixes = list(meta.get("dropped_prefixes", []))
        return model.eval().requires_grad_(False)


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Put float32 copies of `tensors` into `model` (which may live on the meta device); any missing, unknown or
    wrongly shaped key is an error naming `source`."""
    expected = model.state_dict()
    for problem, keys in (("missing", expected.keys() - tensors.keys()), ("unknown", tensors.keys() - expected.keys())):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise Loc3rError(f"{source}: {problem} key {sorted(keys)[0]!r}{more}")
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise Loc3rError(f"{source}: {key!r} has shape {tuple(tensors[key].shape)}, expected {tuple(value.shape)}")
    model.load_state_dict({k: v.to(torch.float32, copy=True) for k, v in tensors.items()}, assign=True)


def postprocess_pose(raw: torch.Tensor) -> torch.Tensor:
    """Official 'exp' pose mode: [T, 7] -> translation * expm1(|t|) / |t| and unit quaternion with qw >= 0."""
    trans, quat = raw[:, :3], raw[:, 3:]
    d = trans.norm(dim=-1, keepdim=True)
    trans = trans * (torch.expm1(d) / d.clip(min=1e-8))
    quat = F.normalize(quat, p=2, dim=-1)
    quat = torch.where(quat[:, :1] < 0, -quat, quat)
    return torch.cat([trans, quat], dim=-1)


def pose_to_c2w(pose: torch.Tensor) -> torch.Tensor:
    """[T, 7] [t, qw, qx, qy, qz] -> [T, 4, 4] camera-to-world matrices."""
    r, i, j, k = pose[:, 3:].unbind(-1)
    two_s = 2.0 / (pose[:, 3:] ** 2).sum(-1)
    rot = torch.stack([
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ], dim=-1).reshape(-1, 3, 3)
    c2w = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(len(pose), 1, 1)
    c2w[:, :3, :3] = rot
    c2w[:, :3, 3] = pose[:, :3]
    return c2w


# ---------------------------------------------------------------- preprocessing (official `load_images`)

def _resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    """size 224: short edge to 224 + center square crop; else long edge to `size` + crop to multiples of 16."""
    w, h = img.size
    long_edge = round(size * max(w / h, h / w)) if size == 224 else size
    s = max(w, h)
    interp = Image.LANCZOS if s > long_edge else Image.BICUBIC
    img = img.resize(tuple(int(round(x * long_edge / s)) for x in (w, h)), interp)
    w, h = img.size
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        return img.crop((cx - half, cy - half, cx + half, cy + half))
    halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
    if w == h:  # official square_ok=False: square frames become 4:3 landscape
        halfh = 3 * halfw / 4
    return img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))


def preprocess(frames: np.ndarray, size: int | None = 512) -> torch.Tensor:
    """[T, H, W, 3] uint8 RGB -> [T, 3, H', W'] float32 in [-1, 1], as the official demo.

    `size=None` skips resize and crop (frames already at the model's input size, a multiple of 16).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise Loc3rError(f"frames: expected [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    if size is not None:
        frames = np.stack([np.asarray(_resize_and_crop(Image.fromarray(f), size)) for f in frames])
    if frames.shape[1] % 16 or frames.shape[2] % 16:
        raise Loc3rError(f"frames: size {frames.shape[1]}x{frames.shape[2]} is not a multiple of 16")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return (x / 255 - 0.5) / 0.5


# ---------------------------------------------------------------- the prior as the VLM sees it

# Which frames CUT3R sees. "demo": the official demo's `load_images` (long side 512, centre crop to multiples of 16;
# short side 224 and a square crop for the 224 checkpoints), what CUT3R was trained and evaluated with: our default.
# "vlm3r": VLM-3R's pipeline, the VLM's frames (SigLIP's 384 px squares) resized to 432 x 432.
CUT3R_INPUTS = ("demo", "vlm3r")
VLM3R_SIZE = 432


def cut3r_input_frames(frames: np.ndarray, mode: str, checkpoint_size: int, vlm_size: int = 384) -> torch.Tensor:
    """[T, H, W, 3] uint8 video frames -> CUT3R's input [T, 3, H', W'] in [-1, 1] for an input `mode`."""
    if mode == "demo":
        return preprocess(frames, checkpoint_size)
    if mode == "vlm3r":
        resized = [Image.fromarray(f).resize((vlm_size, vlm_size), Image.BICUBIC).resize((VLM3R_SIZE, VLM3R_SIZE),
                                                                                         Image.BICUBIC)
                   for f in frames]
        return preprocess(np.stack([np.asarray(r) for r in resized]), None)
    raise Loc3rError(f"unknown CUT3R input {mode!r}: expected one of {', '.join(CUT3R_INPUTS)}")


class Cut3rPrior:
    """Frozen CUT3R as a camera-token prior: uint8 frames of one video -> [T, dim] camera tokens."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, resize: bool = True, input_mode: str = "demo",
                 vlm_size: int = 384):
        self.model = Cut3r.from_pretrained(model_dir).to(device)
        self.device = torch.device(device)
        self.dtype = dtype  # autocast compute dtype
        # the checkpoint's preprocessing size, or None: frames are fed as they are (already multiples of 16)
        self.image_size = self.model.config.image_size if resize else None
        if input_mode not in CUT3R_INPUTS:
            raise Loc3rError(f"unknown CUT3R input {input_mode!r}: expected one of {', '.join(CUT3R_INPUTS)}")
        self.input_mode, self.vlm_size = input_mode, vlm_size  # CUT3R_INPUTS; the VLM's frame size (vlm3r)
        self.dim = self.model.dim  # the camera-token width, from the converted checkpoint's config
        self.fingerprint = model_fingerprint(model_dir)  # recorded with the tokens it computes

    def run(self, frames: np.ndarray) -> Cut3rOutput:
        """[T, H, W, 3] uint8 frames in video order -> camera tokens, poses, c2w (on the prior's device)."""
        if self.input_mode == "demo" and self.image_size is None:
            images = preprocess(frames, None)
        else:
            images = cut3r_input_frames(frames, self.input_mode, self.image_size, self.vlm_size)
        return self.model(images.to(self.device), dtype=self.dtype)

    def tokens_for_frames(self, frames: np.ndarray) -> torch.Tensor:
        """[T, H, W, 3] uint8 frames -> [T, dim] float32 camera tokens."""
        return self.run(frames).camera_tokens.float()


FINGERPRINT_NAME = "fingerprint.json"  # the weights' content hash, written beside them by convert-cut3r


def weights_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (a safetensors file: its header and data), read in 16 MB pieces."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_record(model_dir: Path) -> dict:
    """What FINGERPRINT_NAME holds: the weights' sha256, with the size and modification time it was taken at."""
    weights = Path(model_dir) / WEIGHTS_NAME
    st = weights.stat()
    return {"weights_sha256": weights_sha256(weights), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_fingerprint(model_dir: str | Path) -> str:
    """The content hash of a converted CUT3R's weights (tokens another model computed are stale): read from
    FINGERPRINT_NAME while the weights keep the size and modification time it was taken at, else hashed now (a
    conversion made before it existed, or weights replaced by hand)."""
    weights = Path(model_dir) / WEIGHTS_NAME
    try:
        stored = json.loads((Path(model_dir) / FINGERPRINT_NAME).read_text())
        st = weights.stat()
        if (stored["size"], stored["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            return str(stored["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return weights_sha256(weights)
    except OSError as e:
        raise Loc3rError(f"{weights}: cannot read the CUT3R weights ({e.strerror or e})") from None


def cached_token_width(data_root: str | Path, num_frames: int) -> int:
    """The width of the camera tokens `extract-priors` cached under data_root for T frames (the CUT3R's own)."""
    directory = Path(data_root) / "priors" / "cut3r"
    files = sorted(directory.glob(f"*_T{num_frames}.npz")) if directory.is_dir() else []
    if not files:
        raise Loc3rError(f"{directory}: no cached CUT3R camera tokens for T={num_frames}: run `loc3r extract-priors "
                         f"--cut3r DIR --data {data_root} --frames {num_frames}` first")
    return int(read_token_cache(files[0])["camera_tokens"].shape[-1])


def token_cache_path(data_root: str | Path, scene_id: str, num_frames: int) -> Path:
    """Where `loc3r extract-priors` caches one scene's tokens: <data>/priors/cut3r/<scene>_T<T>.npz."""
    return Path(data_root) / "priors" / "cut3r" / f"{scene_id}_T{num_frames}.npz"


def read_token_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a camera-token cache file (camera_tokens, frame_ids, [input_mode, camera_pose]), or None when
    it does not exist; a file that cannot be read is a Loc3rError naming it."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise Loc3rError(f"{path}: unreadable camera-token cache ({e})") from e
    if "camera_tokens" not in arrays or "frame_ids" not in arrays:
        raise Loc3rError(f"{path}: unreadable camera-token cache (no camera_tokens / frame_ids)")
    return arrays


def load_cached_tokens(data_root: str | Path, scene_id: str, num_frames: int,
                       frame_ids: np.ndarray | None = None, input_mode: str | None = None,
                       source: str | None = None) -> np.ndarray | None:
    """[T, D] float16 cached camera tokens of a scene, or None when extract-priors has not run for it.

    With `frame_ids`, the cache must hold exactly those frames (it was sampled like the training cache); with
    `input_mode`, CUT3R must have seen the frames that way (CUT3R_INPUTS; caches without the field: "demo"); with
    `source` (the fingerprint of the scan's files now, loc3r.data.cache.source_fingerprint), the tokens must have
    been computed from those files: a scan re-exported since is refused, never silently served.
    """
    path = token_cache_path(data_root, scene_id, num_frames)
    cache = read_token_cache(path)
    if cache is None:
        return None
    tokens, cached_ids = cache["camera_tokens"], cache["frame_ids"]
    cached_mode = str(cache.get("input_mode", "demo"))
    if source is not None and str(cache.get("source", "")) != source:
        why = "has no fingerprint of its scan (an older loc3r wrote it)" if "source" not in cache else \
            "was computed from other files of the scan (they changed since)"
        raise Loc3rError(f"{path}: the cache {why}: rerun `loc3r extract-priors` for {scene_id}")
    if input_mode is not None and cached_mode != input_mode:
        raise Loc3rError(f"{path}: CUT3R saw the '{cached_mode}' input frames, the model takes '{input_mode}' "
                         f"(rerun `loc3r extract-priors --cut3r-input {input_mode}`)")
    if frame_ids is not None and not np.array_equal(cached_ids, np.asarray(frame_ids)):
        raise Loc3rError(f"{path}: cached for frames {cached_ids.tolist()[:4]}..., not the requested "
                         f"{np.asarray(frame_ids).tolist()[:4]}... (rerun `loc3r extract-priors`)")
    return tokens
