"""Known-answer tests for sage_ros.evaluation.metrics, plus the official reference outputs against a plain average."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.evaluation import metrics as m


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (96, 128)), (0, 0), 2.0)
    return np.clip(base * 2.5 - 200, 0, 255).astype(np.uint8)


def _orthogonal_pair() -> tuple[np.ndarray, np.ndarray]:
    # A varies along x only, B along y only, both zero-mean +-20 patterns: sum(A' B') = 0 exactly.
    xs = np.where(np.arange(32) % 2 == 0, 20.0, -20.0)
    ys = np.where(np.arange(24) % 4 < 2, 20.0, -20.0)
    a = 128.0 + np.tile(xs, (24, 1))
    b = 128.0 + np.tile(ys[:, None], (1, 32))
    return a, b


# ---------------------------------------------------------------- single-image metrics


def test_entropy_uniform_256_levels_is_8_bits():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(3, axis=0)
    assert m.entropy(image) == pytest.approx(8.0)


def test_entropy_constant_and_two_levels():
    assert m.entropy(np.full((10, 10), 7, np.uint8)) == 0.0
    two = np.zeros((10, 10), np.uint8)
    two[:, 5:] = 200
    assert m.entropy(two) == pytest.approx(1.0)


def test_standard_deviation_half_black_half_white():
    image = np.zeros((4, 8))
    image[:, 4:] = 255
    assert m.standard_deviation(image) == pytest.approx(127.5)


def test_spatial_frequency_stripes():
    # Columns alternate 0/10: every horizontal difference is +-10, no vertical change.
    stripes = np.tile(np.array([0.0, 10.0]), (6, 4))
    assert m.spatial_frequency(stripes) == pytest.approx(10.0)
    assert m.spatial_frequency(stripes.T) == pytest.approx(10.0)
    # Both directions: a checkerboard of 0/10 gives RF = CF = 10.
    checker = (np.indices((8, 8)).sum(axis=0) % 2) * 10.0
    assert m.spatial_frequency(checker) == pytest.approx(math.sqrt(200.0))


def test_average_gradient_ramp():
    ramp = np.tile(np.arange(10) * 3.0, (5, 1))
    assert m.average_gradient(ramp) == pytest.approx(math.sqrt(9.0 / 2.0))
    assert m.average_gradient(np.full((5, 5), 9.0)) == 0.0


# ---------------------------------------------------------------- information metrics


def test_mi_of_identical_images_is_twice_the_entropy(textured):
    h = m.entropy(textured)
    assert h > 4.0
    assert m.mutual_information_pair(textured, textured) == pytest.approx(h)
    assert m.mutual_information(textured, textured, textured) == pytest.approx(2.0 * h)


def test_mi_matches_a_plain_histogram2d_computation(textured):
    other = cv2.GaussianBlur(textured, (5, 5), 0)
    joint, _, _ = np.histogram2d(textured.ravel(), other.ravel(), bins=256, range=[[0, 256], [0, 256]])
    p = joint / joint.sum()
    px, py = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    expected = float((p[nz] * np.log2(p[nz] / np.outer(px, py)[nz])).sum())
    assert m.mutual_information_pair(textured, other) == pytest.approx(expected, rel=1e-9)


def test_mi_with_constant_fused_is_zero(textured):
    assert m.mutual_information(textured, textured, np.zeros_like(textured)) == pytest.approx(0.0, abs=1e-12)


def test_scd_orthogonal_sources():
    a, b = _orthogonal_pair()
    # F = A + B: F - B is A and F - A is B, both correlations are 1.
    assert m.scd(a, b, a + b - 128.0) == pytest.approx(2.0)
    # F = A: corr(A - B, A) = 1/sqrt(2) for orthogonal equal-energy sources; F - A is constant -> 0.
    assert m.scd(a, b, a) == pytest.approx(1.0 / math.sqrt(2.0))
    # F = B - A + 256 (anti-fusion): corr(-A, A) + corr(B - 2A, B) = -1 + 1/sqrt(5).
    assert m.scd(a, b, b - a + 128.0) == pytest.approx(-1.0 + 1.0 / math.sqrt(5.0))


# ---------------------------------------------------------------- structural metrics


def test_vif_identity_and_mean_shift(textured):
    assert m.vif_pixel(textured, textured) == pytest.approx(1.0, abs=1e-6)
    # VIF ignores a uniform brightness shift and rewards contrast gain (g > 1).
    shifted = textured.astype(np.float64) + 10.0
    assert m.vif_pixel(textured, shifted) == pytest.approx(1.0, abs=1e-6)
    assert m.vif_pixel(textured, textured * 1.5) > 1.0
    assert m.vif_pixel(textured, np.full(textured.shape, 100.0)) == 0.0
    assert m.vif(textured, textured, textured) == pytest.approx(2.0, abs=1e-6)


def test_vif_drops_with_noise(textured):
    rng = np.random.default_rng(1)
    noisy = textured + rng.normal(0, 20, textured.shape)
    assert 0.0 < m.vif_pixel(textured, noisy) < 0.7


def _qabf_best() -> float:
    return (m.QABF_TG / (1 + math.exp(m.QABF_KG * (1 - m.QABF_DG)))) * (
        m.QABF_TA / (1 + math.exp(m.QABF_KA * (1 - m.QABF_DA)))
    )


def test_qabf_identity_reaches_the_sigmoid_ceiling(textured):
    assert m.qabf(textured, textured, textured) == pytest.approx(_qabf_best(), rel=1e-6)
    # A flat fused image keeps no edge: only the sigmoid floor Tg/(1+exp(-kg Dg)) ~ 5.5e-4 remains.
    assert m.qabf(textured, textured, np.zeros_like(textured)) < 1e-3


def _qabf_loops(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Per-pixel transcription of the Xydeas-Petrovic definition, for cross-checking the vectorised one."""
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    sy = sx.T

    def grads(img):
        p = np.pad(img.astype(float), 1)
        h, w = img.shape
        g = np.zeros((h, w))
        al = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                win = p[i : i + 3, j : j + 3]
                gx, gy = (win * sx).sum(), (win * sy).sum()
                g[i, j] = math.hypot(gx, gy)
                al[i, j] = math.pi / 2 if gx == 0 else math.atan(gy / gx)
        return g, al

    (ga, aa), (gb, ab), (gf, af) = grads(a), grads(b), grads(f)
    num = den = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for (
                gs,
                als,
            ) in ((ga[i, j], aa[i, j]), (gb[i, j], ab[i, j])):
                if gs == 0 or gf[i, j] == 0:
                    rel = 0.0
                else:
                    rel = min(gs, gf[i, j]) / max(gs, gf[i, j])
                ang = 1 - abs(als - af[i, j]) / (math.pi / 2)
                q = (m.QABF_TG / (1 + math.exp(m.QABF_KG * (rel - m.QABF_DG)))) * (
                    m.QABF_TA / (1 + math.exp(m.QABF_KA * (ang - m.QABF_DA)))
                )
                num += q * gs
                den += gs
    return num / den


def test_qabf_matches_per_pixel_definition(textured):
    a = textured[:12, :14]
    b = cv2.flip(textured, 1)[:12, :14]
    f = (a.astype(float) + b) / 2
    assert m.qabf(a, b, f) == pytest.approx(_qabf_loops(a, b, f), rel=1e-5)  # float32 maps


def test_ssim_identity_and_sum(textured):
    assert m.ssim_pair(textured, textured) == pytest.approx(1.0)
    assert m.ssim(textured, textured, textured) == pytest.approx(2.0)
    assert m.ssim_pair(textured, 255 - textured) < 0.0


def test_fusion_scorer_keys_and_size_check(textured):
    scores = m.FusionScorer(textured, textured).score(textured)
    assert tuple(scores) == m.FUSION_METRICS
    assert all(np.isfinite(v) for v in scores.values())
    with pytest.raises(ValueError, match="differ in size"):
        m.FusionScorer(textured, textured[:-1])
    with pytest.raises(ValueError, match="HxW grey"):
        m.FusionScorer(np.dstack([textured] * 3), textured)


# ---------------------------------------------------------------- segmentation


def test_confusion_and_miou_hand_computed():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 2]])
    cm = m.confusion_matrix(truth, pred, num_classes=4, ignore_index=255)
    assert cm.sum() == 7
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm[2, 2] == 2 and cm[2, 0] == 1
    score = m.segmentation_score(cm)
    # class 0: TP 1, union 1+1+1 = 3; class 1: TP 2, union 3; class 2: TP 2, union 3; class 3 absent.
    assert score.iou == pytest.approx({0: 1 / 3, 1: 2 / 3, 2: 2 / 3})
    assert score.miou == pytest.approx(5 / 9)
    assert score.pixel_accuracy == pytest.approx(5 / 7)
    assert m.segmentation_score(m.confusion_matrix(truth, truth, 4, ignore_index=255)).miou == pytest.approx(1.0)


# ---------------------------------------------------------------- real data


def test_official_reference_beats_plain_average_on_qabf_and_vif(official_dir: Path):
    names = sorted(p.name for p in (official_dir / "reference").glob("*.png"))
    assert len(names) == 6
    for name in names:
        ir = cv2.imread(str(official_dir / "Ir" / name), cv2.IMREAD_GRAYSCALE)
        vis_y = cv2.cvtColor(cv2.imread(str(official_dir / "Vis" / name)), cv2.COLOR_BGR2YCrCb)[..., 0]
        fused_y = cv2.cvtColor(cv2.imread(str(official_dir / "reference" / name)), cv2.COLOR_BGR2YCrCb)[..., 0]
        average = (ir.astype(np.float64) + vis_y) / 2.0
        assert m.qabf(ir, vis_y, fused_y) > m.qabf(ir, vis_y, average), name
        assert m.vif(ir, vis_y, fused_y) > m.vif(ir, vis_y, average), name
