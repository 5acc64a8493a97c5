"""Quality cost of fusing at the thermal camera's resolution instead of the RGB one.

Protocol (both images in MSRS are 640x480, so a low-resolution thermal camera is simulated):
- official: the six upstream pairs (1024x768). Thermal camera simulated at 640x480 (IR downsampled with
  pixel averaging). `rgb` = the IR registered back up to 1024x768 (as the node does) and fused there;
  `thermal` = fused at 640x480, fused Y brought back with the visible detail layer.
- msrs: the MSRS eval split (names from splits.csv). RGB native 640x480, thermal camera simulated at
  384x288 (2.78x fewer pixels: the ratio of a 640x512 thermal camera to a 1280x720 RGB one).
- msrs_up (--upscaled): visible upscaled to 1280x960 (bicubic), thermal native 640x480.
- vifb (--vifb): the 21 VIFB benchmark pairs (other cameras and scenes, never trained on), thermal camera
  simulated at 1/1.667 per side.
Reported: PSNR of the final 8-bit RGB image against the full-resolution fp32 fusion of the same pair,
and the fusion metrics (sage_ros.evaluation.metrics, on the fused Y against the registered IR and the visible Y at
the RGB size) averaged over the split, with the relative difference. MI is also split into its two terms,
MI(IR, F) and MI(VIS, F).
Sensitivity reference (--noise-ref, on by default): the same metrics for the full-resolution fusion itself
with i.i.d. Gaussian noise of 0.5 and 1 grey level added (about 54 and 48 dB): how far each metric moves for
a change far smaller than any approximation of the image, which puts a 3 % tolerance in scale.
`thermal` is what the defaults do: with an export of the released student as --model, the scale-adapted
student (sage_ros/model/scale_student.py) runs below the RGB size, and the released student at the same size
is printed beside it; --no-scale-adapted makes `thermal` the released student.
Oracle (--oracle): the full-resolution fused Y shrunk (pixel averaging) to the fusion size and brought back
by the same upsampler (detail layer with the measured gain, and with gain 1): the final image a student
would give that reproduced full-resolution fusion exactly at the small size. It separates what the
upsampler costs from what the student's response at the smaller scale costs.

    python benchmarks/resolution_quality.py --model MODEL.onnx [--limit N] [--upscaled]
    python benchmarks/resolution_quality.py --model auto --reference sage   # today's defaults vs the released
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sage_ros.evaluation.metrics import FusionScorer, mutual_information_pair  # noqa: E402
from sage_ros.image.imaging import unit_to_uint8, visible_to_ycrcb  # noqa: E402
from sage_ros.pipeline import (  # noqa: E402
    FusionPipeline,
    PipelineSettings,
    build_pipeline,
    resize_area,
    upsample_with_detail,
)

SHARED = REPO.parent / "shared"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def cpu_flags_line() -> str:
    from sage_ros.cpu_features import read_cpu_features

    return read_cpu_features().summary()


NOISE_SIGMAS = (0.5, 1.0)  # grey levels (of 255) for the sensitivity reference


def scores_of(scorer: FusionScorer, ir8: np.ndarray, vis8: np.ndarray, fused8: np.ndarray) -> dict[str, float]:
    """The fusion metrics plus MI's two terms (which source the information is shared with)."""
    scores = scorer.score(fused8)
    scores["MI(IR,F)"] = mutual_information_pair(ir8, fused8)
    scores["MI(VIS,F)"] = mutual_information_pair(vis8, fused8)
    return scores


def print_relative(columns: dict[str, list[dict[str, float]]], keys: list[str], mean_full: dict[str, float]) -> None:
    """A markdown table: per metric, each column's mean relative to the full-resolution mean (%)."""
    print("| metric | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for k in keys:
        cells = []
        for rows in columns.values():
            mean = float(np.mean([m[k] for m in rows]))
            cells.append(f"{(mean - mean_full[k]) / abs(mean_full[k]) * 100 if mean_full[k] else 0.0:+.2f} %")
        print(f"| {k} | " + " | ".join(cells) + " |")


def run_set(name, pairs, full: FusionPipeline, low: FusionPipeline, thermal_hw_of, noise_ref: bool = True,
            oracle: bool = False, released: FusionPipeline | None = None) -> dict:
    psnrs, m_full, m_low, times = [], [], [], {"rgb": 0.0, "thermal": 0.0}
    m_released: list[dict[str, float]] = []
    released_psnr: list[float] = []
    m_oracle: dict[str, list[dict[str, float]]] = {"detail gain": [], "gain 1": []} if oracle else {}
    oracle_psnr: dict[str, list[float]] = {k: [] for k in m_oracle}
    m_noisy: dict[float, list[dict[str, float]]] = {s: [] for s in NOISE_SIGMAS} if noise_ref else {}
    noise_psnr: dict[float, list[float]] = {s: [] for s in m_noisy}
    rng = np.random.default_rng(0)
    for ir8, vis in pairs:
        rgb_hw = vis.shape[:2]
        th, tw = thermal_hw_of(rgb_hw)
        ir_cam = cv2.resize(ir8, (tw, th), interpolation=cv2.INTER_AREA) if ir8.shape != (th, tw) else ir8
        ir_cam = ir_cam.astype(np.float32) / 255.0
        ir_reg = cv2.resize(ir_cam, (rgb_hw[1], rgb_hw[0]), interpolation=cv2.INTER_LINEAR)
        a = full.fuse(ir_reg, vis, thermal_hw=(th, tw))
        b = low.fuse(ir_cam, vis, thermal_hw=(th, tw), classes=False)
        times["rgb"] += a.inference_ms
        times["thermal"] += b.inference_ms
        psnrs.append(psnr(a.fused_rgb, b.fused_rgb))
        ir8_reg, vis8 = unit_to_uint8(ir_reg), unit_to_uint8(visible_to_ycrcb(vis).y)
        scorer = FusionScorer(ir8_reg, vis8)
        full8 = unit_to_uint8(a.fused_y)
        m_full.append(scores_of(scorer, ir8_reg, vis8, full8))
        m_low.append(scores_of(scorer, ir8_reg, vis8, unit_to_uint8(b.fused_y)))
        if released is not None:
            r = released.fuse(ir_cam, vis, thermal_hw=(th, tw), classes=False)
            released_psnr.append(psnr(a.fused_rgb, r.fused_rgb))
            m_released.append(scores_of(scorer, ir8_reg, vis8, unit_to_uint8(r.fused_y)))
        if m_oracle:
            y = visible_to_ycrcb(vis).y
            y_small, fused_small = resize_area(y, b.fusion_hw), resize_area(a.fused_y, b.fusion_hw)
            for key, gain in (("detail gain", None), ("gain 1", 1.0)):
                oracle8 = unit_to_uint8(upsample_with_detail(fused_small, y, y_small, gain=gain))
                oracle_psnr[key].append(psnr(full8, oracle8))
                m_oracle[key].append(scores_of(scorer, ir8_reg, vis8, oracle8))
        for sigma in m_noisy:
            noise = rng.normal(0.0, sigma / 255.0, a.fused_y.shape).astype(np.float32)
            noisy8 = unit_to_uint8(a.fused_y + noise)
            noise_psnr[sigma].append(psnr(full8, noisy8))
            m_noisy[sigma].append(scores_of(scorer, ir8_reg, vis8, noisy8))
    keys = list(m_full[0])
    mean_full = {k: float(np.mean([m[k] for m in m_full])) for k in keys}
    mean_low = {k: float(np.mean([m[k] for m in m_low])) for k in keys}
    sizes = {p[1].shape[:2] for p in pairs}
    if len(sizes) == 1:
        print(f"\n### {name}: {len(psnrs)} pairs, RGB {pairs[0][1].shape[1]}x{pairs[0][1].shape[0]}, thermal camera "
              f"{thermal_hw_of(pairs[0][1].shape[:2])[1]}x{thermal_hw_of(pairs[0][1].shape[:2])[0]}, "
              f"fused at {b.fusion_hw[1]}x{b.fusion_hw[0]}")
    else:
        print(f"\n### {name}: {len(psnrs)} pairs, {len(sizes)} frame sizes")
    print(f"PSNR final RGB vs full-resolution fusion: mean {np.mean(psnrs):.2f} dB, min {np.min(psnrs):.2f} dB")
    print(f"model time total: rgb {times['rgb']:.0f} ms, thermal {times['thermal']:.0f} ms "
          f"(x{times['rgb'] / max(times['thermal'], 1e-9):.2f})")
    print("| metric | rgb (full res) | thermal | diff |")
    print("|---|---|---|---|")
    worst = 0.0
    for k in keys:
        rel = (mean_low[k] - mean_full[k]) / abs(mean_full[k]) * 100 if mean_full[k] else 0.0
        worst = max(worst, abs(rel))
        print(f"| {k} | {mean_full[k]:.4f} | {mean_low[k]:.4f} | {rel:+.2f} % |")
    print(f"largest relative metric difference: {worst:.2f} %")
    if m_released:
        print("\nthe released student at the same fusion size (--no-scale-adapted), final RGB "
              f"{np.mean(released_psnr):.2f} dB (min {np.min(released_psnr):.2f})")
        print_relative({"released student, thermal": m_released}, keys, mean_full)
    if m_noisy:
        print("\nsensitivity reference: full-resolution fusion + i.i.d. Gaussian noise (no resolution change)")
        print_relative({f"+noise {s:g} grey level ({np.mean(noise_psnr[s]):.1f} dB)": rows
                        for s, rows in m_noisy.items()}, keys, mean_full)
    if m_oracle:
        print("\noracle: full-resolution fused Y shrunk to the fusion size, then the same upsampler "
              "(what a student exact at the small size would give)")
        print_relative({f"oracle, {k} (Y {np.mean(oracle_psnr[k]):.1f} dB)": rows for k, rows in m_oracle.items()},
                       keys, mean_full)
    return {"psnr_mean": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)), "worst_metric_pct": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="fusion ONNX model, or auto / sage / fast")
    parser.add_argument("--reference", default=None,
                        help="the full-resolution reference's model (default: --model); e.g. `--model auto "
                        "--reference sage`: today's defaults against the released student at full resolution")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="at most N MSRS pairs (0: the whole eval split)")
    parser.add_argument("--upscaled", action="store_true", help="also the msrs_up protocol (slow)")
    parser.add_argument("--vifb", action="store_true",
                        help="also the 21 VIFB pairs (other cameras, 320x240-630x460; thermal at 1/1.67 per side)")
    parser.add_argument("--no-noise-ref", dest="noise_ref", action="store_false",
                        help="skip the sensitivity reference (full-resolution fusion + 0.5 / 1 grey level of noise)")
    parser.add_argument("--no-scale-adapted", dest="scale_adapted", action="store_false",
                        help="`thermal` with the released student (the default runs the scale-adapted one below the "
                        "RGB size when --model is an export of the released student)")
    parser.add_argument("--oracle", action="store_true",
                        help="also the oracle: full-resolution fused Y shrunk to the fusion size, same upsampler")
    parser.add_argument("--precision", default="fp32",
                        help="precision of the pipeline under test (the full-resolution reference stays fp32): auto "
                        "is what the node runs (bf16 on a CPU with it)")
    args = parser.parse_args()
    print(f"CPU: {cpu_flags_line()}  (shared 2-core machine, loaded by other jobs: times are indicative)")
    def pipeline(resolution: str, scale_adapted: bool = args.scale_adapted, model: str = args.model,
                 precision: str = args.precision):
        return build_pipeline(PipelineSettings(model=model, backend=args.backend, threads=args.threads,
                                               precision=precision, resolution=resolution, scale_adapted=scale_adapted,
                                               segmentation=False))

    full, low = pipeline("rgb", model=args.reference or args.model, precision="fp32"), pipeline("thermal")
    for note in full.notes:
        print("reference:", note)
    for note in low.notes:
        print(note)
    released = pipeline("thermal", scale_adapted=False) if low.reduced else None
    start = time.time()
    official = SHARED / "sage_official"
    pairs = [(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.imread(str(official / "Vis" / p.name)))
             for p in sorted((official / "Ir").glob("*.png"))]
    run_set("official (6 upstream pairs)", pairs, full, low, lambda hw: (480, 640), args.noise_ref, args.oracle,
            released)
    msrs = SHARED / "datasets" / "msrs"
    with open(msrs / "splits.csv") as handle:
        names = [r["name"] for r in csv.DictReader(handle) if r["split"] == "eval"]
    if args.limit:
        names = names[: args.limit]
    pairs = [
        (cv2.imread(str(msrs / "ir" / f"{n}.png"), cv2.IMREAD_GRAYSCALE), cv2.imread(str(msrs / "vi" / f"{n}.png")))
        for n in names
    ]
    run_set("msrs eval, thermal 384x288 vs RGB 640x480", pairs, full, low, lambda hw: (288, 384), args.noise_ref,
            args.oracle, released)
    if args.vifb:
        vifb = SHARED / "datasets" / "vifb" / "input"
        vifb_pairs = [(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vifb / "VI" / p.name)))
                      for p in sorted((vifb / "IR").glob("*.jpg"))]
        run_set(f"vifb ({len(vifb_pairs)} pairs, other cameras), thermal camera at 1/1.67 per side", vifb_pairs,
                full, low, lambda hw: (round(hw[0] / 1.667), round(hw[1] / 1.667)), args.noise_ref, args.oracle,
                released)
    if args.upscaled:
        up = [(ir, cv2.resize(vis, (1280, 960), interpolation=cv2.INTER_CUBIC)) for ir, vis in pairs]
        run_set("msrs eval, thermal 640x480 vs RGB upscaled to 1280x960", up, full, low, lambda hw: (480, 640),
                args.noise_ref, released=released)
    print(f"\n({time.time() - start:.0f} s)")
    for each in (full, low, released):
        if each is not None:
            each.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
