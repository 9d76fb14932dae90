"""Transformer blocks of CUT3R (CroCo ViT encoder, two-stream decoder) with 2D rotary position embedding.

Parameter names mirror the official checkpoints (`attn.qkv`, `cross_attn.projq`, `mlp.fc1`, `norm_y`, ...) so
converted weights load by name. Two numerical details of the official code are reproduced on purpose:

* RoPE2D is computed as the official CUDA kernel computes it: cos / sin of `pos * inv_freq` in float32, one
  rounding back to the input dtype. This also covers the pose token's position (-1, -1), on which the official
  pure-PyTorch fallback crashes.
* The ENCODER attention (croco `models/blocks.py`) casts q and k to float16 before RoPE; the decoder attention
  (dust3r `blocks.py`) uses float32. A float32-only encoder moves camera tokens by ~1e-4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # every LayerNorm of CUT3R


class Rope2D:
    """RoPE2D of one set of token positions [B, N, 2] (row, col; int64, may be -1), as the official CUDA kernel.

    The first half of each head's channels is rotated by the row, the second half by the column; within a half,
    channel j pairs with j + hd/4 and turns by `pos * base^(-j / (hd/4))`. The cos / sin tables are computed once
    per head width in float32 and reused by every block that sees these positions.
    """

    def __init__(self, pos: torch.Tensor, base: float):
        self.pos, self.base = pos, base
        self._tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, N, head_dim] float32."""
        if head_dim not in self._tables:
            half = head_dim // 2  # channels per axis
            steps = torch.arange(0, half, 2, device=self.pos.device, dtype=torch.float32)
            inv_freq = 1.0 / (self.base ** (steps / half))  # [hd/4]
            angles = [self.pos[..., axis].float()[..., None] * inv_freq for axis in (0, 1)]  # 2 x [B, N, hd/4]
            angle = torch.cat([angles[0], angles[0], angles[1], angles[1]], dim=-1)[:, None]  # [B, 1, N, hd]
            self._tables[head_dim] = angle.cos(), angle.sin()
        return self._tables[head_dim]

    def __call__(self, x: torch.Tensor, via_fp16: bool = False) -> torch.Tensor:
        """Rotate x [B, heads, N, hd]. `via_fp16` rounds x to float16 before and the result once after (the
        official encoder path); the maths is float32 either way and the result has x's dtype."""
        out_dtype = x.dtype
        if via_fp16:
            x = x.to(torch.float16)
        rounded_dtype = x.dtype
        cos, sin = self.tables(x.shape[-1])
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            a, b, c, d = x.chunk(4, dim=-1)  # (a, b) rotate with the row, (c, d) with the column
            x = x * cos + torch.cat([-b, a, -d, c], dim=-1) * sin
        return x.to(rounded_dtype).to(out_dtype)


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads, N, C / heads]."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, heads merged back: [B, heads, Nq, hd] -> [B, Nq, heads * hd]."""
    x = F.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused `qkv` projection; RoPE on q and k when given positions."""

    def __init__(self, dim: int, num_heads: int, rope_via_fp16: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.rope_via_fp16 = rope_via_fp16
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rope2D | None) -> torch.Tensor:
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))  # [B, heads, N, hd]
        if rope is not None:
            q, k = rope(q, self.rope_via_fp16), rope(k, self.rope_via_fp16)
        return self.proj(_attend(q, k, v))


class CrossAttention(nn.Module):
    """Multi-head attention of `x` onto `y`: q is rotated by x's positions, k by y's, v is not rotated."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, x_rope: Rope2D | None, y_rope: Rope2D | None) -> torch.Tensor:
        q = _heads(self.projq(x), self.num_heads)  # [B, heads, Nx, hd]
        k = _heads(self.projk(y), self.num_heads)  # [B, heads, Ny, hd]
        v = _heads(self.projv(y), self.num_heads)
        if x_rope is not None:
            q, k = x_rope(q), y_rope(k)
        return self.proj(_attend(q, k, v))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block of the CroCo encoder (q / k rounded to float16 around RoPE, as officially)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads, rope_via_fp16=True)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, rope: Rope2D) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention on x, cross-attention from x to the normalised other stream y, then an MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)
        self.norm_y = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x, y, x_rope: Rope2D | None = None, y_rope: Rope2D | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), x_rope)
        y = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y, x_rope, y_rope)
        return x + self.mlp(self.norm3(x))


class PoseMemory(nn.Module):
    """CUT3R's pose retriever: 2*D-wide memory tokens read (`inquire`) and written (`update_mem`) once per frame.

    Official name `LocalMemory`; no RoPE. A read appends a learned `masked_token` to the projected image summary
    and keeps the last D channels; a write lets the memory attend to [image summary, camera token].
    """

    def __init__(self, enc_dim: int, dim: int, size: int, depth: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.dim = dim
        self.proj_q = nn.Linear(enc_dim, dim)
        self.masked_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mem = nn.Parameter(torch.zeros(1, size, 2 * dim))
        self.write_blocks = nn.ModuleList(DecoderBlock(2 * dim, num_heads, mlp_hidden) for _ in range(depth))
        self.read_blocks = nn.ModuleList(DecoderBlock(2 * dim, num_heads, mlp_hidden) for _ in range(depth))

    def inquire(self, image_summary: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """[B, 1, E] image summary, [B, M, 2D] memory -> [B, 1, D] pose token for the decoder."""
        q = self.proj_q(image_summary)  # [B, 1, D]
        x = torch.cat([q, self.masked_token.expand(q.shape[0], -1, -1)], dim=-1)  # [B, 1, 2D]
        for blk in self.read_blocks:
            x = blk(x, mem)
        return x[..., -self.dim:]

    def update_mem(self, mem: torch.Tensor, image_summary: torch.Tensor, camera_token: torch.Tensor) -> torch.Tensor:
        """Write one frame ([B, 1, E] summary, [B, 1, D] camera token) into the [B, M, 2D] memory."""
        feat = torch.cat([self.proj_q(image_summary), camera_token], dim=-1)  # [B, 1, 2D]
        for blk in self.write_blocks:
            mem = blk(mem, feat)
        return mem


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; also returns each patch's (row, col) position."""

    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[T, 3, H, W] -> tokens [T, N, E] (row-major patches) and positions [1, N, 2] int64."""
        x = self.proj(images)  # [T, E, h, w]
        h, w = x.shape[-2:]
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        pos = torch.cartesian_prod(rows, cols)[None]  # [1, h * w, 2]
        return x.flatten(2).transpose(1, 2), pos
