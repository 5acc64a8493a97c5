"""The transformer unit used by the SPA block (SAGE_SPEC section 3).

A spatial transformer on feature maps: GroupNorm -> 1x1 in-projection -> [self-attention,
cross-attention, GEGLU feed-forward], each pre-LayerNorm with a residual -> zero-initialised 1x1
out-projection with a residual around the whole unit (so a fresh unit is the identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEADS = 2
HEAD_DIM = 32
GROUPS = 4
FF_MULT = 4


class Attention(nn.Module):
    """Multi-head attention; keys and values come from `context` when given, else from `x`."""

    def __init__(
        self, dim: int, context_dim: int | None = None, heads: int = HEADS, head_dim: int = HEAD_DIM
    ):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        # PyTorch picks a memory-efficient kernel on CUDA; the token count grows with the crop area.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    """Gated GELU feed-forward: Linear(dim -> 2 hidden), value * gelu(gate), Linear(hidden -> dim)."""

    def __init__(self, dim: int, mult: int = FF_MULT) -> None:
        super().__init__()
        hidden = dim * mult
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention (self when no context), feed-forward; pre-norm residuals."""

    def __init__(self, dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, context_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), GEGLU(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """(N, C, H, W) feature map -> same shape; `context` is a token sequence (N, L, context_dim)."""

    def __init__(self, channels: int, inner: int = HEADS * HEAD_DIM, context_dim: int | None = None) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.block = TransformerBlock(inner, context_dim or inner)
        self.proj_out = nn.Conv2d(inner, channels, 1)
        # Zero-initialised out-projection: the unit starts as the identity and learns a correction.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        tokens = to_tokens(self.proj_in(self.norm(x)))
        tokens = self.block(tokens, context)
        return x + self.proj_out(from_tokens(tokens, h, w))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H*W, C) -> (N, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
