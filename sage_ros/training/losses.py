"""SAGE training losses (SAGE_SPEC section 4), each a small function of tensors.

Notation: y = visible luminance, ir = infrared, out = the network being trained, ref = the other
network's output (the teacher for the student step, the detached student for the teacher's feedback
term). Images are (N, 1, H, W) in [0, 1]; masks are (N, K, H, W) in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sage_ros.image.imaging import _CB_TO_B, _CB_TO_G, _CR_TO_G, _CR_TO_R

# OpenCV's 3x3 Sobel kernels (x: left-right derivative, y: top-bottom).
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_SOBEL_Y = ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0))
CS_EPS = 1e-7

#: Phi: masked grey image batch (N, 1, H, W) -> list of feature maps (the truncated SAM encoder)
FeatureFn = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Sobel_x x| + |Sobel_y x| per channel, zero padding, same size as x (N, C, H, W)."""
    kernels = torch.tensor([_SOBEL_X, _SOBEL_Y], dtype=x.dtype, device=x.device).unsqueeze(1)
    n, c, h, w = x.shape
    grads = F.conv2d(x.reshape(n * c, 1, h, w), kernels, padding=1)
    return grads.abs().sum(dim=1).reshape(n, c, h, w)


def gradient_term(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G(out; a, b) = L1(|grad out|, max(|grad a|, |grad b|)): keep the stronger source edge."""
    target = torch.maximum(sobel_magnitude(a), sobel_magnitude(b))
    return F.l1_loss(sobel_magnitude(out), target)


def intensity_loss(out: torch.Tensor, ref: torch.Tensor, y: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """L_MSE = 3 MSE(out, y) + 2 MSE(out, ir) + 4 MSE(out, ref)."""
    return 3.0 * F.mse_loss(out, y) + 2.0 * F.mse_loss(out, ir) + 4.0 * F.mse_loss(out, ref)


def gradient_loss(out: torch.Tensor, ref: torch.Tensor, y: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """L_grad = 9 G(out; y, ir) + 3 G(out; ref, ref)."""
    return 9.0 * gradient_term(out, y, ir) + 3.0 * gradient_term(out, ref, ref)


def l2_mask_ratio(
    feats_out: Sequence[torch.Tensor], feats_ref: Sequence[torch.Tensor], feats_src: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Upstream's ratio for one mask: sum_i ||ref_i - out_i||_2 / (sum_i ||src_i - out_i||_2 + eps).

    The L2 norms run over the whole tensor (batch included) and the Phi outputs i are summed before
    the one division, as upstream's PerceptualLoss_CR / ContrastiveLoss do.
    """
    num = sum(torch.linalg.vector_norm(fr - fo) for fo, fr in zip(feats_out, feats_ref, strict=True))
    den = sum(torch.linalg.vector_norm(fs - fo) for fo, fs in zip(feats_out, feats_src, strict=True))
    return num / (den + CS_EPS)


def contrastive_semantic_loss(
    phi: FeatureFn,
    out: torch.Tensor,
    ref: torch.Tensor,
    y: torch.Tensor,
    ir: torch.Tensor,
    vis_masks: torch.Tensor,
    ir_masks: torch.Tensor,
) -> torch.Tensor:
    """L_cs: for each VIS mask P (negative y) and IR mask Q (negative ir), upstream's ratio (`l2_mask_ratio`)
    of Phi(out*P) against Phi(ref*P) (pulled toward) and Phi(y*P) (pushed from), summed over masks.

    A mask that is empty over the whole batch is skipped, as upstream does. All masks of one modality go
    through Phi in one batch (N*K images) to keep the encoder calls few.
    """
    total = out.new_zeros(())
    for source, masks in ((y, vis_masks), (ir, ir_masks)):
        n, k, h, w = masks.shape
        flat = masks.reshape(n * k, 1, h, w)

        def masked(img: torch.Tensor, flat: torch.Tensor = flat, k: int = k) -> torch.Tensor:
            return img.repeat_interleave(k, dim=0) * flat

        feats_out = phi(masked(out))
        with torch.no_grad():
            feats_ref = phi(masked(ref.detach()))
            feats_src = phi(masked(source))
        present = masks.flatten(2).any(dim=2).any(dim=0).tolist()  # per mask index, over the batch
        for j in range(k):
            if not present[j]:
                continue
            fo, fr, fs = ([f[j::k] for f in feats] for feats in (feats_out, feats_ref, feats_src))
            total = total + l2_mask_ratio(fo, fr, fs)
    return total


def feature_loss(out_taps: Sequence[torch.Tensor], ref_taps: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_fea = sum over taps of (1 - cosine similarity) of the flattened maps, averaged over the batch."""
    if len(out_taps) != len(ref_taps):
        raise ValueError(f"{len(out_taps)} taps against {len(ref_taps)}: the networks do not pair")
    total = out_taps[0].new_zeros(())
    for a, b in zip(out_taps, ref_taps, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"tap shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        total = total + (1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)).mean()
    return total


def fused_rgb(fused_y: torch.Tensor, crcb: torch.Tensor) -> torch.Tensor:
    """Fused luminance (N, 1, H, W) + visible chroma (N, 2, H, W) -> RGB (N, 3, H, W) in [0, 1].

    Differentiable twin of `sage_ros.image.imaging.ycrcb_to_rgb`: the segmenter sees what users see.
    """
    dcr, dcb = crcb[:, :1] - 0.5, crcb[:, 1:2] - 0.5
    rgb = torch.cat(
        [fused_y + _CR_TO_R * dcr, fused_y + _CR_TO_G * dcr + _CB_TO_G * dcb, fused_y + _CB_TO_B * dcb], dim=1
    )
    return rgb.clamp(0.0, 1.0)


@dataclass
class LossWeights:
    """Published weights (SAGE_SPEC section 4); every one can be overridden from the YAML config."""

    student_mse: float = 3.0
    student_grad: float = 3.0
    student_cs: float = 1.0 / 3000.0
    student_fea: float = 0.3
    teacher_y: float = 1.0
    teacher_ir: float = 1.0
    teacher_grad: float = 2.0
    teacher_seg: float = 0.3
    teacher_feedback: float = 0.1  # x the student-side loss WITHOUT L_fea (upstream Losses.cal)
    teacher_fea: float = 0.01  # the teacher's only L_fea weight


def student_side_loss(
    out: torch.Tensor,
    ref: torch.Tensor,
    y: torch.Tensor,
    ir: torch.Tensor,
    vis_masks: torch.Tensor | None,
    ir_masks: torch.Tensor | None,
    phi: FeatureFn | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """3 L_MSE + 3 L_grad + L_cs/3000 of `out` against `ref`: upstream's `Losses.cal`, no L_fea.

    The student's loss adds 0.3 L_fea to it; the teacher's feedback term is
    0.1 x this alone, its L_fea weight being the separate 0.01 (issue 13: L_fea was counted twice).
    Without Phi (or masks) the L_cs term is left out and logged as 0: it is the only part that
    needs SAM. Returns the total and its parts (floats, for logs).
    """
    l_mse = intensity_loss(out, ref, y, ir)
    l_grad = gradient_loss(out, ref, y, ir)
    total = weights.student_mse * l_mse + weights.student_grad * l_grad
    l_cs = out.new_zeros(())
    if phi is not None and vis_masks is not None and ir_masks is not None and weights.student_cs:
        l_cs = contrastive_semantic_loss(phi, out, ref, y, ir, vis_masks, ir_masks)
        total = total + weights.student_cs * l_cs
    return total, {"mse": l_mse.item(), "grad": l_grad.item(), "cs": l_cs.item()}


def teacher_task_loss(
    fused: torch.Tensor,
    y: torch.Tensor,
    ir: torch.Tensor,
    logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    weights: LossWeights,
    ignore_index: int = 255,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Teacher's own objective: MSE(T, y) + MSE(T, ir) + 2 G(T; y, ir) + 0.3 CE(seg(T), label).

    The CE term needs both logits (N, C, H, W) and integer labels (N, H, W); it is skipped (logged
    as 0) for unlabelled data.
    """
    l_int = weights.teacher_y * F.mse_loss(fused, y) + weights.teacher_ir * F.mse_loss(fused, ir)
    l_grad = gradient_term(fused, y, ir)
    total = l_int + weights.teacher_grad * l_grad
    l_seg = fused.new_zeros(())
    if logits is not None and labels is not None and weights.teacher_seg:
        if labels.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise TypeError(f"labels must be integer class ids, got {labels.dtype}")
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        # A batch whose pixels are all ignored (padding only) would make the mean NaN.
        if bool((labels != ignore_index).any()):
            l_seg = F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)
            total = total + weights.teacher_seg * l_seg
    return total, {"int": l_int.item(), "grad": l_grad.item(), "seg": l_seg.item()}
