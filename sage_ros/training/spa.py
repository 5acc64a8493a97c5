"""Semantic Persistent Attention (SPA) with its Persistent Repository (SAGE_SPEC section 3).

One SPA block is shared by all five teacher stages. At each stage it sees the image feature and the
two SAM mask features (all `channels` wide, one size), works on them max-pooled by 4 (attention cost
grows with the token count) and returns a 4*channels map at the stage's size, plus the two refined mask
features (also at the stage's size) that the teacher carries to the next stage, as upstream does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.training.transformer import SpatialTransformer, to_tokens

POOL = 4
NEGATIVE_SLOPE = 0.01


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class SPABlock(nn.Module):
    """forward(img, vis_mask, ir_mask) -> (concat(img, img_in, img_mid, mask) (N, 4*C, H, W),
    refined vis_mask (N, C, H, W), refined ir_mask (N, C, H, W))."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.image_self = SpatialTransformer(c)  # image tokens self-attend -> Persistent Repository
        self.vis_cross = SpatialTransformer(c, context_dim=c)  # VIS-mask queries read the PR
        self.ir_cross = SpatialTransformer(c, context_dim=c)  # IR-mask queries read the PR
        self.vis_merge = conv3x3(2 * c, c)
        self.ir_merge = conv3x3(2 * c, c)
        self.mask_merge = conv3x3(2 * c, c)
        self.image_merge = conv3x3(2 * c, c)
        self.reproject = nn.Linear(2 * c, c)  # mask feature re-projects the PR into new keys/values
        self.image_cross = SpatialTransformer(c, context_dim=c)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(
        self, img: torch.Tensor, vis_mask: torch.Tensor, ir_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = img.shape[-2:]
        img_in, vis_in, ir_in = (F.max_pool2d(t, POOL, ceil_mode=True) for t in (img, vis_mask, ir_mask))
        img_att = self.image_self(img_in)
        repository = to_tokens(img_att)  # (N, h*w, C): the Persistent Repository
        vis_att = self.vis_cross(vis_in, repository)
        ir_att = self.ir_cross(ir_in, repository)
        vis_b = self.act(self.vis_merge(torch.cat([vis_att, vis_in], 1))) + vis_att
        ir_b = self.act(self.ir_merge(torch.cat([ir_att, ir_in], 1))) + ir_att
        # Residuals of both merged branches and both attention outputs, as upstream's middle_mask sum.
        mask = self.act(self.mask_merge(torch.cat([ir_b, vis_b], 1))) + ir_b + vis_b + vis_att + ir_att
        img_b = self.act(self.image_merge(torch.cat([img_att, img_in], 1))) + img_att
        context = self.reproject(torch.cat([repository, to_tokens(mask)], dim=-1))
        img_mid = self.image_cross(img_b, context)
        out = torch.cat([img_b, img_in, img_mid, mask], dim=1)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        return up(out), up(vis_b), up(ir_b)
