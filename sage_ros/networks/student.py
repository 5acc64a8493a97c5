"""The distilled SAGE student (SAGE_SPEC section 2): a 3-level U-Net of width 32 on (Y, IR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 32
NEGATIVE_SLOPE = 0.01


def conv_block(in_channels: int, width: int = WIDTH) -> nn.Sequential:
    """Three times [Conv3x3 -> BatchNorm -> LeakyReLU]; indices match the released state dict."""
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(3):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1, bias=True),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(NEGATIVE_SLOPE),
        ]
        channels = width
    return nn.Sequential(*layers)


def channel_adjust(in_channels: int, width: int = WIDTH) -> nn.Sequential:
    """Conv1x1 -> BatchNorm -> LeakyReLU that squeezes a skip concatenation back to `width`."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 1, bias=True),
        nn.BatchNorm2d(width),
        nn.LeakyReLU(NEGATIVE_SLOPE),
    )


class SageStudent(nn.Module):
    """Fuses visible luminance and infrared into one luminance image.

    forward(y, ir) with y, ir of shape (N, 1, H, W) in [0, 1] returns (fused, taps): fused is the
    Tanh output (N, 1, H, W); taps are the five 32-channel feature maps x1..x5 used for distillation.
    """

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.module1 = conv_block(2, width)
        self.module2 = conv_block(width, width)
        self.module3 = conv_block(width, width)
        self.adjust_channels4 = channel_adjust(2 * width, width)
        self.module4 = conv_block(width, width)
        self.adjust_channels5 = channel_adjust(2 * width, width)
        self.module5 = conv_block(width, width)
        self.final_decoder = nn.Sequential(nn.Conv2d(width, 1, 3, padding=1, bias=True), nn.Tanh())

    def forward(
        self, y: torch.Tensor, ir: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        x1 = self.module1(torch.cat([y, ir], dim=1))
        x2 = self.module2(F.max_pool2d(x1, 2))
        x3 = self.module3(F.max_pool2d(x2, 2))
        up3 = F.interpolate(x3, size=x2.shape[-2:], mode="bilinear", align_corners=False)
        x4 = self.module4(self.adjust_channels4(torch.cat([up3, x2], dim=1)))
        up4 = F.interpolate(x4, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        x5 = self.module5(self.adjust_channels5(torch.cat([up4, x1], dim=1)))
        fused = self.final_decoder(x5)
        return fused, (x1, x2, x3, x4, x5)


class StudentFusionOnly(nn.Module):
    """Wraps the student so that it returns only the fused Y (the deployable graph)."""

    def __init__(self, student: SageStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, vis_y: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return self.student(vis_y, ir)[0]
