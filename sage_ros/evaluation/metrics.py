"""Image-fusion quality metrics (SAGE_SPEC section 7) as pure, vectorised numpy functions.

Conventions used by every function here:
- images are HxW grey levels on the 0-255 scale (uint8 or float); F is the fused image, A the
  infrared image, B the visible luminance (the Y of YCrCb);
- the two-source metrics (MI, SCD, VIF, Qabf, SSIM) are the sum of the fused image's score
  against each source, as in the infrared/visible fusion literature (e.g. the VIFB toolbox and
  the tables of SeAFusion, DDFM, SAGE);
- a degenerate case (a constant image where a correlation or ratio is undefined) scores 0 rather
  than NaN, so a mean over a data set stays defined.

Each docstring names the definition it follows. No torch, no ROS: used by bag evaluation and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Xydeas-Petrovic constants (SAGE_SPEC section 7, from Xydeas & Petrovic, Electronics Letters 2000).
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8

#: metric names in report order; "higher is better" holds for every one of them
FUSION_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")


def _grey(name: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty HxW grey image, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _same_shape(*images: np.ndarray) -> None:
    shapes = {np.shape(im) for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images differ in size: {sorted(shapes)}")


def _levels(image: np.ndarray) -> np.ndarray:
    """Grey levels as integers 0..255 for histograms (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.intp)


def _entropy_of_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


# --------------------------------------------------------------------------- single-image metrics


def entropy(f: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin grey-level histogram of F (Roberts et al. 2008)."""
    levels = _levels(_grey("F", f))
    return _entropy_of_counts(np.bincount(levels.ravel(), minlength=256))


def standard_deviation(f: np.ndarray) -> float:
    """SD: population standard deviation of F (divides by the pixel count, as numpy/MATLAB std2)."""
    return float(_grey("F", f).std())


def spatial_frequency(f: np.ndarray) -> float:
    """SF (Eskicioglu & Fisher 1995): sqrt(RF^2 + CF^2).

    RF and CF are the root mean square of the horizontal (row) and vertical (column) first
    differences, each averaged over the differences that exist ((W-1)H and (H-1)W of them).
    """
    f = _grey("F", f)
    rf2 = np.mean(np.diff(f, axis=1) ** 2) if f.shape[1] > 1 else 0.0
    cf2 = np.mean(np.diff(f, axis=0) ** 2) if f.shape[0] > 1 else 0.0
    return float(np.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray) -> float:
    """AG (Cui et al. 2015): mean over the (H-1)(W-1) grid of sqrt((gx^2 + gy^2) / 2).

    gx, gy are forward differences along x and y taken at the same top-left pixel.
    """
    f = _grey("F", f)
    if min(f.shape) < 2:
        return 0.0
    gx = f[:-1, 1:] - f[:-1, :-1]
    gy = f[1:, :-1] - f[:-1, :-1]
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


# --------------------------------------------------------------------------- information metrics


def mutual_information_pair(x: np.ndarray, y: np.ndarray) -> float:
    """MI(X, Y) in bits from the 256x256 joint grey-level histogram: H(X) + H(Y) - H(X, Y)."""
    x, y = _levels(_grey("X", x)), _levels(_grey("Y", y))
    _same_shape(x, y)
    joint = np.bincount((x * 256 + y).ravel(), minlength=256 * 256).reshape(256, 256)
    return (
        _entropy_of_counts(joint.sum(axis=1))
        + _entropy_of_counts(joint.sum(axis=0))
        - _entropy_of_counts(joint.ravel())
    )


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MI = MI(A, F) + MI(B, F) (Qu et al. 2002), each from 256x256 joint histograms, in bits.

    With F = A = B this is 2 H(A).
    """
    return mutual_information_pair(a, f) + mutual_information_pair(b, f)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else 0.0


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD, sum of the correlations of differences (Aslantas & Bendes 2015).

    corr(F - B, A) + corr(F - A, B) with Pearson correlation; an undefined correlation (a
    constant difference image) counts 0.
    """
    a, b, f = _grey("A", a), _grey("B", b), _grey("F", f)
    _same_shape(a, b, f)
    return _correlation(f - b, a) + _correlation(f - a, b)


# --------------------------------------------------------------------------- structural metrics


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only the 'valid' part (MATLAB filter2(..., 'valid'))."""
    r = len(kernel_1d) // 2
    out = cv2.sepFilter2D(image, cv2.CV_64F, kernel_1d, kernel_1d, borderType=cv2.BORDER_REFLECT)
    return out[r : out.shape[0] - r, r : out.shape[1] - r]


@dataclass
class _VifScale:
    window: np.ndarray  # 1-D Gaussian taps of this scale
    ref: np.ndarray  # reference at this scale (filtered and decimated from scale 2 on)
    mu: np.ndarray  # local mean of the reference ('valid' part)
    var: np.ndarray  # local variance of the reference, clamped like the authors' code
    flat: np.ndarray  # where the reference carries no information (variance < 1e-10)
    den: float  # this scale's share of the denominator


_VIF_EPS = 1e-10


def _vif_reference(ref: np.ndarray, sigma_nsq: float) -> list[_VifScale]:
    """Everything VIFp needs from the reference alone (shared when one source scores many images)."""
    scales = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_window(n, n / 5.0)
        if scale > 1:
            if min(ref.shape) < n:
                break
            ref = _filter_valid(ref, win)[::2, ::2]
        if min(ref.shape) < n:
            break
        mu = _filter_valid(ref, win)
        var = np.maximum(_filter_valid(ref * ref, win) - mu * mu, 0.0)
        flat = var < _VIF_EPS
        var[flat] = 0.0
        den = float(np.log10(1.0 + var / sigma_nsq).sum())
        scales.append(_VifScale(win, ref, mu, var, flat, den))
    return scales


def _vif_against(scales: list[_VifScale], dist: np.ndarray, sigma_nsq: float) -> float:
    num = den = 0.0
    for i, sc in enumerate(scales):
        win = sc.window
        if i > 0:
            dist = _filter_valid(dist, win)[::2, ::2]
        mu2 = _filter_valid(dist, win)
        s2 = np.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0.0)
        s12 = _filter_valid(sc.ref * dist, win) - sc.mu * mu2
        g = s12 / (sc.var + _VIF_EPS)
        sv = s2 - g * s12
        g[sc.flat] = 0.0
        sv[sc.flat] = s2[sc.flat]
        flat_dist = s2 < _VIF_EPS
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        negative = g < 0
        sv[negative] = s2[negative]
        g[negative] = 0.0
        sv = np.maximum(sv, _VIF_EPS)
        num += float(np.log10(1.0 + g * g * sc.var / (sv + sigma_nsq)).sum())
        den += sc.den
    return num / den if den > 0 else 0.0


def vif_pixel(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """VIFp(ref, dist): the pixel-domain, 4-scale VIF of Sheikh & Bovik (IEEE TIP 2006).

    Follows the authors' pixel-domain version (vifp_mscale): at scale s (1..4) a Gaussian window
    of N = 2^(5-s)+1 taps and sigma N/5; from scale 2 on, both images are filtered ('valid') and
    decimated by 2 first. Local statistics use the 'valid' part only; the gain g and distortion
    variance sv^2 are clamped as in the authors' code (g >= 0, sv^2 >= 1e-10, flat reference regions
    carry no information). Result = sum of log10(1 + g^2 s1^2 / (sv^2 + sn^2)) over
    sum of log10(1 + s1^2 / sn^2), sn^2 = 2. VIFp(A, A) = 1 up to the 1e-10 clamp.
    """
    ref, dist = _grey("reference", ref), _grey("distorted", dist)
    _same_shape(ref, dist)
    return _vif_against(_vif_reference(ref, sigma_nsq), dist, sigma_nsq)


def vif(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIF = VIFp(A, F) + VIFp(B, F), sources as references (Han et al. 2013 usage of VIFp)."""
    return vif_pixel(a, f) + vif_pixel(b, f)


_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.T.copy()


def _sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # float32 maps: Qabf's sigmoids are smooth and bounded, and float32 exp/arctan run several
    # times faster (SIMD); the final weighted sums are accumulated in float64.
    image = np.asarray(image, dtype=np.float32)
    # Zero padding ('same' correlation), as the widely used MATLAB implementation (filter2) does.
    gx = cv2.filter2D(image, cv2.CV_32F, _SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.filter2D(image, cv2.CV_32F, _SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = cv2.magnitude(gx, gy)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(gx == 0, np.float32(np.pi / 2), np.arctan(gy / gx)).astype(np.float32)
    return strength, orientation


_F32 = np.float32


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_src > g_f, g_f / g_src, g_src / g_f)
    ratio = np.where((g_src == 0) | (g_f == 0), _F32(0.0), ratio)
    angle = _F32(1.0) - np.abs(a_src - a_f) * _F32(2.0 / np.pi)
    q_g = _F32(QABF_TG) / (_F32(1.0) + np.exp(_F32(QABF_KG) * (ratio - _F32(QABF_DG))))
    q_a = _F32(QABF_TA) / (_F32(1.0) + np.exp(_F32(QABF_KA) * (angle - _F32(QABF_DA))))
    return q_g * q_a


def _qabf_from(
    src_a: tuple[np.ndarray, np.ndarray], src_b: tuple[np.ndarray, np.ndarray], f: np.ndarray
) -> float:
    g_a, al_a = src_a
    g_b, al_b = src_b
    g_f, al_f = _sobel_strength_orientation(f)
    q_af = _edge_preservation(g_a, al_a, g_f, al_f)
    q_bf = _edge_preservation(g_b, al_b, g_f, al_f)
    weight = g_a.sum(dtype=np.float64) + g_b.sum(dtype=np.float64)
    if weight <= 0:
        return 0.0
    return float(((q_af * g_a).sum(dtype=np.float64) + (q_bf * g_b).sum(dtype=np.float64)) / weight)


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qabf, the Xydeas-Petrovic edge-preservation metric (Electronics Letters 36(4), 2000).

    Sobel 3x3 gradients (zero padding, float32 maps, float64 sums); strength g = |grad|,
    orientation alpha = atan(gy/gx) (pi/2 where gx = 0). Relative strength
    G = min(g_s, g_F)/max(g_s, g_F) (0 where either is 0), relative orientation
    1 - |alpha_s - alpha_F|/(pi/2), each through the sigmoid
    T / (1 + exp(k (x - D))) with Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8.
    Qabf = sum(Q_AF w_A + Q_BF w_B) / sum(w_A + w_B) with weights w = g^1.
    The best possible value is Tg/(1+exp(kg(1-Dg))) * Ta/(1+exp(ka(1-Da))) ~= 0.9748.
    """
    a, b, f = _grey("A", a), _grey("B", b), _grey("F", f)
    _same_shape(a, b, f)
    return _qabf_from(_sobel_strength_orientation(a), _sobel_strength_orientation(b), f)


def ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM(X, Y) of Wang et al. (IEEE TIP 2004) via scikit-image.

    The paper's setting: 11x11 Gaussian window with sigma 1.5, population covariances,
    K1=0.01, K2=0.03, dynamic range 255. The score is the mean of the SSIM map without its
    5-pixel border (where the window would leave the image), which is what skimage returns.
    """
    from skimage.metrics import structural_similarity

    x, y = _grey("X", x), _grey("Y", y)
    _same_shape(x, y)
    # float32 input keeps skimage in float32: twice as fast, and on 0-255 images the score moves by
    # ~1e-8 (measured on MSRS) against float64.
    return float(
        structural_similarity(
            x.astype(np.float32),
            y.astype(np.float32),
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SSIM = SSIM(A, F) + SSIM(B, F) (so 2 at best)."""
    return ssim_pair(a, f) + ssim_pair(b, f)


# --------------------------------------------------------------------------- all at once


class FusionScorer:
    """Scores any number of fused images of one source pair A (IR), B (VIS Y).

    What depends on the sources alone (their histograms, Sobel maps, VIF reference statistics) is
    computed once here, so scoring SAGE and several baselines on one pair costs far less than
    scoring each from scratch. Results equal the standalone functions exactly.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, sigma_nsq: float = 2.0) -> None:
        self.a, self.b = _grey("A (infrared)", a), _grey("B (visible Y)", b)
        _same_shape(self.a, self.b)
        self._sigma_nsq = sigma_nsq
        self._sobel_a = _sobel_strength_orientation(self.a)
        self._sobel_b = _sobel_strength_orientation(self.b)
        self._vif_a = _vif_reference(self.a, sigma_nsq)
        self._vif_b = _vif_reference(self.b, sigma_nsq)

    def score(self, f: np.ndarray) -> dict[str, float]:
        """Every metric of FUSION_METRICS for the fused image F."""
        f = _grey("F (fused)", f)
        _same_shape(self.a, f)
        a, b = self.a, self.b
        return {
            "EN": entropy(f),
            "SD": standard_deviation(f),
            "SF": spatial_frequency(f),
            "AG": average_gradient(f),
            "MI": mutual_information(a, b, f),
            "SCD": scd(a, b, f),
            "VIF": _vif_against(self._vif_a, f, self._sigma_nsq)
            + _vif_against(self._vif_b, f, self._sigma_nsq),
            "Qabf": _qabf_from(self._sobel_a, self._sobel_b, f),
            "SSIM": ssim(a, b, f),
        }


# --------------------------------------------------------------------------- segmentation


def confusion_matrix(
    truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """num_classes x num_classes counts, rows = ground truth, columns = prediction.

    Pixels whose truth equals ignore_index, or whose truth or prediction is outside
    [0, num_classes), are not counted.
    """
    truth = np.asarray(truth).astype(np.int64, copy=False).ravel()
    pred = np.asarray(pred).astype(np.int64, copy=False).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"ground truth has {truth.size} pixels, prediction {pred.size}")
    keep = (truth >= 0) & (truth < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore_index is not None:
        keep &= truth != ignore_index
    counts = np.bincount(truth[keep] * num_classes + pred[keep], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class SegmentationScore:
    miou: float  # mean IoU over the classes present in truth or prediction
    iou: dict[int, float]  # per present class
    pixel_accuracy: float


def segmentation_score(confusion: np.ndarray) -> SegmentationScore:
    """Mean IoU over the classes present in the ground truth or the prediction.

    IoU_c = TP / (TP + FP + FN) from the confusion matrix; a class absent from both truth and
    prediction is left out of the mean (it would be 0/0).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    iou = {int(c): float(tp[c] / union[c]) for c in np.flatnonzero(present)}
    total = confusion.sum()
    return SegmentationScore(
        miou=float(np.mean(list(iou.values()))) if iou else 0.0,
        iou=iou,
        pixel_accuracy=float(tp.sum() / total) if total > 0 else 0.0,
    )
