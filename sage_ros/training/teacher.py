"""The SAGE teacher ("main network", training only; SAGE_SPEC section 3).

Inputs: visible Y and IR (N, 1, H, W), and the two 4-channel mask images (source image zeroed
outside each of the top-4 SAM masks). One shared SPA block runs at five stages (H, H/2, H/4, H/2, H);
each stage output also gives a 32-channel tap that pairs with the student's x1..x5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.training.spa import SPABlock

NEGATIVE_SLOPE = 0.01
FEAT = 64  # width of the image and mask features entering SPA
SPA_OUT = 4 * FEAT  # SPA output: concat(img, img_in, img_mid, mask)
TAP = 32  # the student's width
NUM_MASKS = 4


def conv_act(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """Conv (same padding) -> LeakyReLU; the teacher's conv paths have no normalisation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), nn.LeakyReLU(NEGATIVE_SLOPE)
    )


def chain(*widths: int) -> nn.Sequential:
    return nn.Sequential(*(conv_act(a, b) for a, b in zip(widths, widths[1:], strict=False)))


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class SageTeacher(nn.Module):
    """forward(y, ir, vis_masks, ir_masks) -> (fused (N, 1, H, W), five 32-channel taps).

    The output ends in LeakyReLU as upstream's decoder (unbounded above, slope 0.01 below 0).
    """

    def __init__(self, num_masks: int = NUM_MASKS) -> None:
        super().__init__()
        self.image_stem = chain(2, 16, 32)  # its output is the img0 skip
        self.image_proj = conv_act(32, FEAT)
        self.vis_mask_encoder = chain(num_masks, 16, 32, FEAT)
        self.ir_mask_encoder = chain(num_masks, 16, 32, FEAT)
        self.spa = SPABlock(FEAT)  # one set of weights, reused at every stage
        self.down1 = conv_act(SPA_OUT, FEAT)
        self.down2 = conv_act(SPA_OUT, FEAT)
        self.up1 = conv_act(SPA_OUT, FEAT)
        self.up2 = conv_act(SPA_OUT, FEAT)
        self.taps = nn.ModuleList(nn.Conv2d(SPA_OUT, TAP, 1) for _ in range(5))
        # 320 = SPA output (256) + the 64-channel image feature; 96 = 64 + img0 (32).
        self.decoder_a = chain(SPA_OUT + FEAT, 256, 128, 64)
        self.decoder_b = chain(64 + 32, 64, 32, 16)
        self.head = nn.Sequential(nn.Conv2d(16, 1, 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE))

    def forward(
        self, y: torch.Tensor, ir: torch.Tensor, vis_masks: torch.Tensor, ir_masks: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        img0 = self.image_stem(torch.cat([y, ir], 1))
        img = self.image_proj(img0)
        # Each mask image: the source kept inside one of the K masks.
        vis = self.vis_mask_encoder(y * vis_masks)
        irm = self.ir_mask_encoder(ir * ir_masks)

        # The refined mask features of each stage feed the next one (max-pooled down, resized up),
        # as upstream's model_main/model.py carries vi_mask / ir_mask through the five stages.
        s1, vis, irm = self.spa(img, vis, irm)
        d1 = F.max_pool2d(self.down1(s1), 2)
        s2, vis, irm = self.spa(d1, F.max_pool2d(vis, 2), F.max_pool2d(irm, 2))
        d2 = F.max_pool2d(self.down2(s2), 2)
        s3, vis, irm = self.spa(d2, F.max_pool2d(vis, 2), F.max_pool2d(irm, 2))
        u1 = self.up1(resize_to(s3, s2) + s2)
        s4, vis, irm = self.spa(u1, resize_to(vis, s2), resize_to(irm, s2))
        u2 = self.up2(resize_to(s4, s1) + s1)
        s5, _, _ = self.spa(u2, resize_to(vis, s1), resize_to(irm, s1))

        taps = tuple(conv(s) for conv, s in zip(self.taps, (s1, s2, s3, s4, s5), strict=True))
        x = self.decoder_a(torch.cat([s5, img], 1))
        x = self.decoder_b(torch.cat([x, img0], 1))
        return self.head(x), taps
