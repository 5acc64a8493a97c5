"""Known-answer tests for the SAGE training losses (SAGE_SPEC section 4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sage_ros.image.imaging import ycrcb_to_rgb
from sage_ros.training import losses
from sage_ros.training.losses import LossWeights


def _ramp(h: int = 8, w: int = 10, step: float = 0.05) -> torch.Tensor:
    return (torch.arange(w, dtype=torch.float32) * step).expand(h, w).reshape(1, 1, h, w).clone()


def test_sobel_matches_opencv_inside_the_border() -> None:
    img = torch.rand(1, 1, 12, 15, generator=torch.Generator().manual_seed(0))
    ours = losses.sobel_magnitude(img)[0, 0, 1:-1, 1:-1].numpy()
    arr = img[0, 0].numpy().astype(np.float64)
    ref = np.abs(cv2.Sobel(arr, cv2.CV_64F, 1, 0, ksize=3)) + np.abs(
        cv2.Sobel(arr, cv2.CV_64F, 0, 1, ksize=3)
    )
    np.testing.assert_allclose(ours, ref[1:-1, 1:-1], atol=1e-5)
    # A horizontal ramp of step s has |Sobel_x| = 8 s and no vertical gradient inside.
    np.testing.assert_allclose(losses.sobel_magnitude(_ramp())[0, 0, 1:-1, 1:-1].numpy(), 0.4, atol=1e-6)


def test_gradient_term_zero_on_identical_maps_and_known_value() -> None:
    a = torch.rand(2, 1, 9, 11)
    assert losses.gradient_term(a, a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.gradient_term(a, a, torch.zeros_like(a)).item() == pytest.approx(0.0, abs=1e-7)
    flat = torch.zeros(1, 1, 8, 10)
    ramp = _ramp()
    # Against a flat output the L1 is the mean |grad| of the stronger source.
    expected = losses.sobel_magnitude(ramp).mean().item()
    assert losses.gradient_term(flat, ramp, flat).item() == pytest.approx(expected, rel=1e-6)
    assert losses.gradient_loss(a, a, a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_intensity_loss_weights() -> None:
    zero, one = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert losses.intensity_loss(zero, one, one, one).item() == pytest.approx(9.0)
    assert losses.intensity_loss(zero, zero, one, zero).item() == pytest.approx(3.0)
    assert losses.intensity_loss(zero, zero, zero, one).item() == pytest.approx(2.0)
    assert losses.intensity_loss(one, one, one, one).item() == 0.0


def _phi(x: torch.Tensor) -> list[torch.Tensor]:
    # A stand-in feature extractor with two outputs, like the truncated SAM encoder.
    return [x, torch.nn.functional.avg_pool2d(x, 2)]


def test_contrastive_semantic_loss_zero_when_output_is_the_anchor_and_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    y, ir, ref = (torch.rand(2, 1, 8, 8, generator=g) for _ in range(3))
    masks = (torch.rand(2, 4, 8, 8, generator=g) > 0.3).float()
    loss = losses.contrastive_semantic_loss(_phi, ref.clone(), ref, y, ir, masks, masks)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    out = torch.rand(2, 1, 8, 8, generator=g, requires_grad=True)
    ref_leaf = ref.clone().requires_grad_(True)
    loss = losses.contrastive_semantic_loss(_phi, out, ref_leaf, y, ir, masks, masks)
    assert loss.item() > 0 and torch.isfinite(loss)
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert ref_leaf.grad is None  # the anchor is a target, not trained through this term
    # Upstream's form: one ratio per mask (2 modalities x 4 masks), each 1 when the reference equals the source.
    ones = losses.contrastive_semantic_loss(_phi, out.detach(), y, y, y, masks, masks)
    assert ones.item() == pytest.approx(8.0, rel=1e-5)


def test_contrastive_semantic_loss_l2_form_against_a_hand_computation() -> None:
    """Upstream's ratio per mask: (sum_i ||Phi_i(ref P) - Phi_i(out P)||_2) / (sum_i ||Phi_i(src P) -
    Phi_i(out P)||_2 + 1e-7), norms over the whole batch; an all-zero mask (over the batch) is skipped."""
    g = torch.Generator().manual_seed(5)
    y, ir, ref, out = (torch.rand(2, 1, 8, 8, generator=g) for _ in range(4))
    vis_masks = (torch.rand(2, 2, 8, 8, generator=g) > 0.5).float()
    ir_masks = (torch.rand(2, 2, 8, 8, generator=g) > 0.5).float()
    ir_masks[:, 1] = 0.0  # empty in every image of the batch: skipped

    def ratio(src: torch.Tensor, p: torch.Tensor) -> float:
        f_out, f_ref, f_src = _phi(out * p), _phi(ref * p), _phi(src * p)
        num = sum(float(torch.sqrt(((a - b) ** 2).sum())) for a, b in zip(f_ref, f_out, strict=True))
        den = sum(float(torch.sqrt(((a - b) ** 2).sum())) for a, b in zip(f_src, f_out, strict=True))
        return num / (den + 1e-7)

    expected = ratio(y, vis_masks[:, 0:1]) + ratio(y, vis_masks[:, 1:2]) + ratio(ir, ir_masks[:, 0:1])
    got = losses.contrastive_semantic_loss(_phi, out, ref, y, ir, vis_masks, ir_masks)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_feature_loss_known_answers() -> None:
    taps = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    assert losses.feature_loss(taps, taps).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.feature_loss(taps, [3.0 * t for t in taps]).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.feature_loss(taps, [-t for t in taps]).item() == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(ValueError, match="tap shapes"):
        losses.feature_loss(taps, [taps[0], taps[0]])
    with pytest.raises(ValueError, match="do not pair"):
        losses.feature_loss(taps, taps[:1])


def test_fused_rgb_matches_runtime_colour_step() -> None:
    g = torch.Generator().manual_seed(2)
    y, crcb = torch.rand(1, 1, 5, 6, generator=g), torch.rand(1, 2, 5, 6, generator=g)
    ours = losses.fused_rgb(y, crcb)[0].permute(1, 2, 0).numpy()
    ref = ycrcb_to_rgb(y[0, 0].numpy(), crcb[0, 0].numpy(), crcb[0, 1].numpy())
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_teacher_task_loss_uses_integer_labels() -> None:
    weights = LossWeights()
    fused = torch.rand(2, 1, 6, 6)
    labels = torch.full((2, 6, 6), 14, dtype=torch.int64)
    logits = torch.zeros(2, 15, 6, 6)
    logits[:, 14] = 20.0  # confident and right
    _, right = losses.teacher_task_loss(fused, fused, fused, logits, labels, weights)
    assert right["seg"] == pytest.approx(0.0, abs=1e-6)
    assert right["int"] == 0.0 and right["grad"] == 0.0
    _, wrong = losses.teacher_task_loss(fused, fused, fused, logits, torch.zeros_like(labels), weights)
    assert wrong["seg"] == pytest.approx(20.0, rel=1e-3)
    with pytest.raises(TypeError, match="integer"):
        losses.teacher_task_loss(fused, fused, fused, logits, labels.float() / 255, weights)
    total, ignored = losses.teacher_task_loss(
        fused, fused, fused, logits, torch.full_like(labels, 255), weights
    )
    assert ignored["seg"] == 0.0 and torch.isfinite(total)


def test_student_side_loss_parts_and_devices() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        g = torch.Generator().manual_seed(3)
        y, ir, ref = (torch.rand(1, 1, 8, 8, generator=g).to(device) for _ in range(3))
        masks = torch.ones(1, 4, 8, 8, device=device)
        total, parts = losses.student_side_loss(ref, ref, y, ir, masks, masks, _phi, LossWeights())
        assert total.device.type == device and total.ndim == 0
        assert parts["cs"] == pytest.approx(0.0, abs=1e-6)
        expected = 3 * (
            3 * ((ref - y) ** 2).mean() + 2 * ((ref - ir) ** 2).mean()
        ) + 3 * 9 * losses.gradient_term(ref, y, ir)
        assert total.item() == pytest.approx(expected.item(), rel=1e-5)
        _, no_phi = losses.student_side_loss(ref, ref, y, ir, None, None, None, LossWeights())
        assert no_phi["cs"] == 0.0
