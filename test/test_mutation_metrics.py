"""Fusion and segmentation metrics checked where mutation testing found them unchecked
(docs/mutation.md): hand-computed values on tiny arrays, independent float64 transcriptions of the
published VIFp / SSIM / Qabf definitions (2-D kernels and scipy correlations, not the module's
separable OpenCV filters), which input an error names, and the degenerate cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.signal import correlate2d

from sage_ros.evaluation import metrics as m

RNG = np.random.default_rng(21)


def _gauss2d(n: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', n, sigma): normalised 2-D Gaussian."""
    ax = np.arange(n) - (n - 1) / 2.0
    xx, yy = np.meshgrid(ax, ax)
    k = np.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    return k / k.sum()


def _valid(image: np.ndarray, win: np.ndarray) -> np.ndarray:
    return correlate2d(image, win, mode="valid")


def vifp_reference(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Transcription of the authors' vifp_mscale.m (LIVE, Sheikh & Bovik), stopping at the first
    scale the image is too small for; a reference without information scores 0."""
    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gauss2d(n, n / 5.0)
        if scale > 1:
            ref, dist = _valid(ref, win)[::2, ::2], _valid(dist, win)[::2, ::2]
        if min(ref.shape) < n:
            break
        mu1, mu2 = _valid(ref, win), _valid(dist, win)
        s1 = _valid(ref * ref, win) - mu1 * mu1
        s2 = _valid(dist * dist, win) - mu2 * mu2
        s12 = _valid(ref * dist, win) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        flat = s1 < 1e-10
        g[flat] = 0
        sv[flat] = s2[flat]
        s1[flat] = 0
        g[s2 < 1e-10] = 0
        sv[s2 < 1e-10] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.log10(1 + g * g * s1 / (sv + sigma_nsq)).sum()
        den += np.log10(1 + s1 / sigma_nsq).sum()
    return float(num / den) if den > 0 else 0.0


def ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004: 11x11 Gaussian (sigma 1.5), population statistics, K1 0.01, K2 0.03, L 255,
    mean of the map over the positions where the window lies inside the image."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    w = _gauss2d(11, 1.5)
    mx, my = _valid(x, w), _valid(y, w)
    vx = _valid(x * x, w) - mx * mx
    vy = _valid(y * y, w) - my * my
    cxy = _valid(x * y, w) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(smap.mean())


def qabf_reference(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Xydeas & Petrovic 2000 in float64: Sobel with zero padding ('same'), g = |grad|,
    alpha = atan(gy/gx) (pi/2 where gx = 0), sigmoids with the paper's constants, weights g."""
    sx = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

    def sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = img.astype(np.float64)
        gx = correlate2d(img, sx, mode="same", boundary="fill")
        gy = correlate2d(img, sx.T, mode="same", boundary="fill")
        safe = np.where(gx == 0, 1.0, gx)
        return np.hypot(gx, gy), np.where(gx == 0, np.pi / 2, np.arctan(gy / safe))

    def q(gs: np.ndarray, als: np.ndarray, gf: np.ndarray, alf: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(gs, gf), np.maximum(gs, gf)
        rel = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
        rel[(gs == 0) | (gf == 0)] = 0.0
        ang = 1 - np.abs(als - alf) / (np.pi / 2)
        qg = 0.9994 / (1 + np.exp(-15.0 * (rel - 0.5)))
        qa = 0.9879 / (1 + np.exp(-22.0 * (ang - 0.8)))
        return qg * qa

    (ga, aa), (gb, ab), (gf, af) = sobel(a), sobel(b), sobel(f)
    weight = ga.sum() + gb.sum()
    return float((q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb).sum() / weight) if weight > 0 else 0.0


def _mixed_pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A reference with texture and a flat block, and a distortion that keeps some of it, inverts
    some (negative gain), flattens some and adds noise: every clamp of VIFp is reached."""
    ref = np.clip(RNG.normal(120, 40, (size, size)), 0, 255)
    ref[: size // 4, : size // 4] = 90.0  # flat reference: no information
    dist = ref + RNG.normal(0, 8, ref.shape)
    h = size // 2
    dist[h:, :h] = 255.0 - ref[h:, :h]  # inverted: negative correlation
    dist[h:, h:] = 60.0  # flat distorted image
    return ref, dist


# --- which input an error names ------------------------------------------------------------------
GOOD = np.zeros((24, 24))
BAD = np.zeros((24, 24, 3))


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: m.entropy(BAD), "F"),
        (lambda: m.standard_deviation(BAD), "F"),
        (lambda: m.spatial_frequency(BAD), "F"),
        (lambda: m.average_gradient(BAD), "F"),
        (lambda: m.mutual_information_pair(BAD, GOOD), "X"),
        (lambda: m.mutual_information_pair(GOOD, BAD), "Y"),
        (lambda: m.scd(BAD, GOOD, GOOD), "A"),
        (lambda: m.scd(GOOD, BAD, GOOD), "B"),
        (lambda: m.scd(GOOD, GOOD, BAD), "F"),
        (lambda: m.vif_pixel(BAD, GOOD), "reference"),
        (lambda: m.vif_pixel(GOOD, BAD), "distorted"),
        (lambda: m.qabf(BAD, GOOD, GOOD), "A"),
        (lambda: m.qabf(GOOD, BAD, GOOD), "B"),
        (lambda: m.qabf(GOOD, GOOD, BAD), "F"),
        (lambda: m.ssim_pair(BAD, GOOD), "X"),
        (lambda: m.ssim_pair(GOOD, BAD), "Y"),
        (lambda: m.FusionScorer(BAD, GOOD), "A (infrared)"),
        (lambda: m.FusionScorer(GOOD, BAD), "B (visible Y)"),
        (lambda: m.FusionScorer(GOOD, GOOD).score(BAD), "F (fused)"),
        (lambda: m.entropy(np.zeros((0, 4))), "F"),
    ],
)
def test_a_bad_image_is_named_in_the_error(call, name: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(f"{name}: expected a non-empty HxW grey image, got shape (")


SMALL = np.zeros((23, 24))


@pytest.mark.parametrize(
    "call",
    [
        lambda: m.mutual_information_pair(SMALL, GOOD),
        lambda: m.mutual_information_pair(GOOD, SMALL),
        lambda: m.scd(SMALL, GOOD, GOOD),
        lambda: m.scd(GOOD, SMALL, GOOD),
        lambda: m.scd(GOOD, GOOD, SMALL),
        lambda: m.vif_pixel(SMALL, GOOD),
        lambda: m.vif_pixel(GOOD, SMALL),
        lambda: m.qabf(SMALL, GOOD, GOOD),
        lambda: m.qabf(GOOD, SMALL, GOOD),
        lambda: m.qabf(GOOD, GOOD, SMALL),
        lambda: m.ssim_pair(SMALL, GOOD),
        lambda: m.ssim_pair(GOOD, SMALL),
        lambda: m.FusionScorer(SMALL, GOOD),
        lambda: m.FusionScorer(GOOD, GOOD).score(SMALL),
    ],
)
def test_every_input_of_a_different_size_is_refused(call) -> None:
    with pytest.raises(ValueError, match=r"^images differ in size: \[\(23, 24\), \(24, 24\)\]$"):
        call()


# --- single-image metrics by hand ----------------------------------------------------------------
def test_entropy_of_one_pixel_and_of_clipped_levels() -> None:
    assert m.entropy(np.array([[7]], np.uint8)) == 0.0
    # Grey levels are rounded and clipped to 0..255 before the histogram.
    assert m.entropy(np.array([[-5.0, 0.0]])) == 0.0
    assert m.entropy(np.array([[255.0, 300.0]])) == 0.0
    assert m.entropy(np.array([[255.0, 256.4]])) == 0.0
    assert m.entropy(np.array([[254.6, 254.4]])) == pytest.approx(1.0)  # 255 and 254


def test_spatial_frequency_of_a_single_row_column_and_two_columns() -> None:
    # No differences in a direction: that direction contributes 0 (not NaN).
    assert m.spatial_frequency(np.array([[0.0, 3.0, 6.0, 9.0, 12.0]])) == pytest.approx(3.0)
    assert m.spatial_frequency(np.array([[0.0], [3.0], [6.0], [9.0], [12.0]])) == pytest.approx(3.0)
    assert m.spatial_frequency(np.array([[0.0, 4.0], [0.0, 4.0]])) == pytest.approx(4.0)
    assert m.spatial_frequency(np.array([[0.0, 0.0], [4.0, 4.0]])) == pytest.approx(4.0)
    assert m.spatial_frequency(np.array([[5.0]])) == 0.0


def test_average_gradient_by_hand() -> None:
    assert m.average_gradient(np.array([[0.0, 2.0], [0.0, 2.0]])) == pytest.approx(math.sqrt(2.0))
    assert m.average_gradient(np.array([[1.0, 5.0, 9.0]])) == 0.0  # one row: no 2x2 cell
    f = np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0], [0.0, 4.0, 8.0]])
    # gx over the top-left 2x2 cells: [[1, 1], [2, 2]]; gy: [[0, 1], [0, 2]].
    cells = [math.sqrt((1 + 0) / 2), math.sqrt((1 + 1) / 2), math.sqrt((4 + 0) / 2), math.sqrt((4 + 4) / 2)]
    assert m.average_gradient(f) == pytest.approx(sum(cells) / 4)


def test_mutual_information_of_two_pixel_images() -> None:
    # X = (0, 255), Y = (255, 0): each 1 bit, jointly 1 bit, so MI = 1 + 1 - 1 = 1.
    assert m.mutual_information_pair(np.array([[0, 255]]), np.array([[255, 0]])) == pytest.approx(1.0)
    # Y constant: MI = 1 + 0 - 1 = 0.
    assert m.mutual_information_pair(np.array([[0, 255]]), np.array([[9, 9]])) == pytest.approx(0.0, abs=1e-12)


# --- SCD against numpy's Pearson correlation -----------------------------------------------------
def test_scd_equals_pearson_correlations_with_non_zero_means() -> None:
    a = np.array([[1.0, 2.0, 6.0], [3.0, 5.0, 4.0]])
    b = np.array([[3.0, 1.0, 2.0], [7.0, 2.0, 6.0]])
    f = np.array([[4.0, 3.0, 9.0], [8.0, 9.0, 7.0]])
    expected = (np.corrcoef((f - b).ravel(), a.ravel())[0, 1] + np.corrcoef((f - a).ravel(), b.ravel())[0, 1])
    assert m.scd(a, b, f) == pytest.approx(expected, rel=1e-12)
    # Correlation ignores scale: tiny amplitudes (energies far below 1) give the same score.
    assert m.scd(a * 1e-3, b * 1e-3, f * 1e-3) == pytest.approx(expected, rel=1e-9)
    # A constant difference image has no correlation: it counts 0.
    assert m.scd(a, b, a + 1.0) == pytest.approx(np.corrcoef((a + 1.0 - b).ravel(), a.ravel())[0, 1] + 0.0)


# --- VIFp against the authors' definition --------------------------------------------------------
def test_vif_matches_the_reference_on_an_image_that_reaches_every_clamp() -> None:
    ref, dist = _mixed_pair(64)
    assert m.vif_pixel(ref, dist) == pytest.approx(vifp_reference(ref, dist), rel=1e-7)
    assert m.vif_pixel(dist, ref) == pytest.approx(vifp_reference(dist, ref), rel=1e-7)
    noisy = ref + RNG.normal(0, 25, ref.shape)
    assert m.vif_pixel(ref, noisy) == pytest.approx(vifp_reference(ref, noisy), rel=1e-7)


def test_vif_matches_the_reference_on_tall_and_large_images() -> None:
    ref, dist = _mixed_pair(96)  # 96 px: a fifth, 2-tap scale would still find pixels; there is none
    assert m.vif_pixel(ref, dist) == pytest.approx(vifp_reference(ref, dist), rel=1e-7)
    tall_ref, tall_dist = ref[:, 20:60], dist[:, 20:60]  # 96 x 40: rows and columns are not interchangeable
    assert m.vif_pixel(tall_ref, tall_dist) == pytest.approx(vifp_reference(tall_ref, tall_dist), rel=1e-7)


def test_vif_on_small_images_uses_the_scales_that_fit() -> None:
    ref, dist = _mixed_pair(64)
    for size in (40, 20):  # two scales, one scale
        r, d = ref[:size, 8 : 8 + size], dist[:size, 8 : 8 + size]
        assert m.vif_pixel(r, d) == pytest.approx(vifp_reference(r, d), rel=1e-7), size
    # 17x17 is exactly one window of the first scale: VIFp(A, A) = 1.
    tile = ref[20:37, 20:37]
    assert m.vif_pixel(tile, tile) == pytest.approx(1.0, abs=1e-6)
    assert m.vif_pixel(ref[:16, :16], ref[:16, :16]) == 0.0  # smaller than any window


def test_vif_degenerate_and_low_energy_references() -> None:
    flat = np.full((32, 32), 77.0)
    assert m.vif_pixel(flat, RNG.uniform(0, 255, flat.shape)) == 0.0
    # Variations of a hundredth of a grey level: the denominator is far below 1, VIFp(A, A) still 1.
    faint = 100.0 + RNG.normal(0, 0.01, (48, 48))
    assert m.vif_pixel(faint, faint) == pytest.approx(1.0, abs=1e-5)  # the 1e-10 clamp shows at 1e-6


# --- SSIM against the paper ----------------------------------------------------------------------
def test_ssim_matches_the_paper_on_low_contrast_images() -> None:
    # Low contrast (a few grey levels) so the constants C1, C2 weigh in the score.
    x = 100.0 + RNG.normal(0, 3, (40, 44))
    y = 0.7 * x + 30.0 + RNG.normal(0, 2, x.shape)
    assert m.ssim_pair(x, y) == pytest.approx(ssim_reference(x, y), abs=2e-6)
    z = np.clip(RNG.normal(128, 60, x.shape), 0, 255)
    assert m.ssim_pair(z, y) == pytest.approx(ssim_reference(z, y), abs=2e-6)


# --- Qabf against the definition -----------------------------------------------------------------
def test_qabf_matches_the_definition_on_exact_unit_edges() -> None:
    # Steps of 0.25 and 0.5 grey levels give Sobel magnitudes of exactly 1 and 2 at the edge.
    a = np.zeros((8, 10))
    a[:, 5:] = 0.25
    b = np.zeros((8, 10))
    b[:, 5:] = 0.5
    for f in (a, b, a + RNG.normal(0, 0.05, a.shape)):
        assert m.qabf(a, b, f) == pytest.approx(qabf_reference(a, b, f), rel=1e-5)


def test_qabf_of_flat_sources_is_zero_and_faint_edges_still_count() -> None:
    flat = np.zeros((8, 8))  # zero, as the zero padding outside: no gradient anywhere
    assert m.qabf(flat, flat, RNG.uniform(0, 255, flat.shape)) == 0.0
    faint = np.zeros((8, 8))
    faint[4, 4] = 0.01  # total gradient weight far below 1
    best = (m.QABF_TG / (1 + math.exp(m.QABF_KG * (1 - m.QABF_DG)))) * (
        m.QABF_TA / (1 + math.exp(m.QABF_KA * (1 - m.QABF_DA)))
    )
    assert m.qabf(faint, faint, faint) == pytest.approx(best, rel=1e-5)


def test_qabf_on_flat_regions_emits_no_floating_point_warning() -> None:
    a = np.zeros((12, 12))
    a[3:6, 3:6] = 200.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.qabf(a, np.zeros_like(a), a[::-1].copy())
        m.qabf(np.zeros_like(a), a, np.zeros_like(a))


# --- FusionScorer --------------------------------------------------------------------------------
def test_fusion_scorer_equals_the_standalone_functions() -> None:
    a, b = _mixed_pair(48)
    f = 0.5 * a + 0.5 * b + RNG.normal(0, 5, a.shape)
    scores = m.FusionScorer(a, b).score(f)
    # Qabf only to 1e-9: cv2.magnitude's float32 result varies in the last bit from call to call
    # (measured: 20 of 20 repeated calls on the same input differ somewhere), so no two Sobel maps
    # of one image are bit-identical, cached or not.
    assert scores.pop("Qabf") == pytest.approx(m.qabf(a, b, f), rel=1e-9)
    assert scores == {
        "EN": m.entropy(f),
        "SD": m.standard_deviation(f),
        "SF": m.spatial_frequency(f),
        "AG": m.average_gradient(f),
        "MI": m.mutual_information(a, b, f),
        "SCD": m.scd(a, b, f),
        "VIF": m.vif(a, b, f),
        "SSIM": m.ssim(a, b, f),
    }
    assert scores["VIF"] == pytest.approx(vifp_reference(a, f) + vifp_reference(b, f), rel=1e-7)


# --- segmentation --------------------------------------------------------------------------------
def test_confusion_matrix_skips_out_of_range_labels_on_either_side() -> None:
    truth = np.array([0, 1, 2, 3, -1, 1, 0, 1])
    pred = np.array([0, 1, 1, 0, 0, 3, -2, 2])
    # 3 classes: pixels 3 (truth 3), 4 (truth -1), 5 (pred 3), 6 (pred -2) are out of range.
    cm = m.confusion_matrix(truth, pred, num_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_confusion_matrix_ignore_index_inside_the_class_range() -> None:
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[1, 0, 1], [0, 2, 2]])
    assert m.confusion_matrix(truth, pred, 3).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    # Class 0 as "unlabelled": its truth pixels are not counted; predictions of 0 still are.
    assert m.confusion_matrix(truth, pred, 3, ignore_index=0).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 2]]
    with pytest.raises(ValueError, match="^ground truth has 6 pixels, prediction 5$"):
        m.confusion_matrix(truth, pred.ravel()[:5], 3)


def test_ignore_index_keeps_the_range_check_and_reaches_the_miou() -> None:
    truth = np.array([0, 1, 7, 255, 1, 2])
    pred = np.array([0, 1, 1, 1, 9, 2])
    # 255 ignored; truth 7 and prediction 9 out of range for 3 classes: 3 pixels counted.
    assert m.confusion_matrix(truth, pred, 3, ignore_index=255).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    truth2 = np.array([[0, 0, 1], [1, 2, 2]])
    pred2 = np.array([[1, 0, 1], [0, 2, 2]])
    # Without ignoring: IoU 1/3, 1/3, 1 -> 5/9. Ignoring class 0's truth: IoU 0, 1/2, 1 -> 1/2.
    assert m.segmentation_score(m.confusion_matrix(truth2, pred2, 3)).miou == pytest.approx(5 / 9)
    assert m.segmentation_score(m.confusion_matrix(truth2, pred2, 3, ignore_index=0)).miou == pytest.approx(0.5)


def test_segmentation_score_single_pixel_class_and_empty_matrix() -> None:
    one = m.segmentation_score(np.array([[1, 0], [0, 0]]))
    assert one.iou == {0: 1.0} and one.miou == 1.0 and one.pixel_accuracy == 1.0
    empty = m.segmentation_score(np.zeros((3, 3), np.int64))
    assert empty.iou == {} and empty.miou == 0.0 and empty.pixel_accuracy == 0.0
