"""Every parameter of the `sage_fusion` node: name, default, meaning, and the checked settings object.

One table drives the node's `declare_parameter` calls, the validation, `config/sage_fusion.yaml` (a
test checks they agree) and docs/node.md. No ROS import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_ros.backends import BACKEND_NAMES, PRECISIONS
from sage_ros.image.registration import parse_homography
from sage_ros.image.thermal import MODES, NormalizerConfig
from sage_ros.model.model_variants import VARIANTS
from sage_ros.pipeline import PipelineSettings, parse_resolution
from sage_ros.pipeline.detection import DEFAULT_MIN_SCORE
from sage_ros.pipeline.segmentation import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_OBJECT_CONFIDENCE, PEAK_FRACTION

RELIABILITIES = ("best_effort", "reliable")
# Inputs also take `auto`: match the publishers found on each topic (as `ros2 topic echo` does).
INPUT_RELIABILITIES = ("auto", *RELIABILITIES)
# Marker for a double-array parameter without a default (ROS cannot infer a type from []).
DOUBLE_ARRAY = "double_array"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "configure and activate at start (false: wait for lifecycle commands)"),
    ParamSpec("backend", "auto", f"inference backend: {' | '.join(BACKEND_NAMES)}"),
    ParamSpec("model_path", "", "exported ONNX fusion model; empty = model.variant"),
    ParamSpec("model.variant", "auto",
              f"{' | '.join(VARIANTS)}: model when model_path is empty (fast = shipped distilled student; auto = "
              "chosen from the machine and logged)"),
    ParamSpec("weights_path", "", "checkpoint for model.variant sage (default: the fetched one) and the torch backend"),
    ParamSpec("precision", "auto",
              "auto (by the CPU's features: bf16 on OpenVINO with AVX-512 BF16/AMX, else fp32) | fp32 | "
              "bf16 (openvino) | fp16 | int8 (tensorrt)"),
    ParamSpec("fusion.resolution", "thermal",
              "thermal (fuse at ~the thermal camera's pixel count, RGB detail added back) | rgb | WxH"),
    ParamSpec("fusion.scale_adapted", True,
              "true: below the RGB size run the shipped scale-adapted student (the released one fine-tuned to "
              "fuse there as it fuses at full size; same cost); false: the released student at every size"),
    ParamSpec("segmentation.min_confidence", DEFAULT_MIN_CONFIDENCE,
              "a pixel whose most probable class is below this probability is background (0 = never abstain)"),
    ParamSpec("segmentation.min_object_confidence", DEFAULT_MIN_OBJECT_CONFIDENCE,
              "a region of one class whose most confident pixel is below this is background; a kept region loses "
              f"its pixels below {PEAK_FRACTION:g} of that peak (0 = keep every region whole)"),
    ParamSpec("segmentation.detector", True,
              "true: the COCO object detector's boxes (on the mean of the visible Y and IR) replace the network's "
              "regions of their class (cars and people on any camera; needs `sage-ros weights fetch`); false: the "
              "network alone"),
    ParamSpec("segmentation.max_rate", 0.0,
              "masks (and overlays) at most this often (Hz, by the RGB stamps), the fused image for every pair: on "
              "a small CPU the fused image keeps the camera's rate; 0 = a mask for every pair"),
    ParamSpec("segmentation.detector_min_score", DEFAULT_MIN_SCORE,
              "the detector's lowest kept box score, in (0, 1): lower finds more distant objects and paints more "
              "false ones (the default was chosen on MSRS; see docs/segmentation.md)"),
    ParamSpec("threads", 0, "CPU threads for the backend; 0 lets the runtime decide"),
    ParamSpec("device", "cpu", "torch device (torch backend only)"),
    ParamSpec("engine_path", "", "TensorRT: an explicit engine file"),
    ParamSpec("engine_dir", "", "TensorRT: engine cache folder"),
    ParamSpec("frame_id", "", "output frame_id override; empty keeps the RGB header's frame_id"),
    ParamSpec("sync.slop", 0.03, "max stamp difference (s) for a thermal/RGB pair"),
    ParamSpec("sync.queue_size", 10, "messages kept per input while waiting for a partner"),
    ParamSpec("sync.thermal_offset", 0.0, "seconds added to thermal stamps before pairing (late driver: <0)"),
    ParamSpec("sync.use_message_filters", True, "use message_filters when importable (false: always ours)"),
    ParamSpec("max_pair_age", 0.0, "drop pairs whose RGB stamp is older than this (s) at inference; 0 = off"),
    ParamSpec("qos.reliability", "auto",
              "input QoS: auto (RELIABLE if every publisher is, else BEST_EFFORT) | best_effort | reliable"),
    ParamSpec("qos.depth", 5, "input QoS history depth"),
    ParamSpec("output_qos.reliability", "reliable", "output QoS: reliable | best_effort"),
    ParamSpec("output_qos.depth", 5, "output QoS history depth"),
    ParamSpec("thermal.mode", "percentile", f"mono16/32FC1 to [0,1]: {' | '.join(MODES)} (mono8 passes through)"),
    ParamSpec("thermal.low_percentile", 1.0, "percentile mode: lower bound percentile"),
    ParamSpec("thermal.high_percentile", 99.0, "percentile mode: upper bound percentile"),
    ParamSpec("thermal.ema_alpha", 0.1, "percentile mode: weight of the newest frame's bounds (1 = no smoothing)"),
    ParamSpec("thermal.fixed_min", 0.0, "fixed mode: window low end (counts, or degrees C for 32FC1)"),
    ParamSpec("thermal.fixed_max", 16383.0, "fixed mode: window high end (counts, or degrees C for 32FC1)"),
    ParamSpec("thermal.min_span", 1.0, "smallest window span (input units), avoids amplifying noise"),
    ParamSpec("registration.homography", DOUBLE_ARRAY, "9 numbers, row-major 3x3, thermal px -> RGB px"),
    ParamSpec("registration.aspect_tolerance", 0.02, "relative aspect difference allowed without homography"),
    ParamSpec("overlay.alpha", 0.5, "segmentation overlay opacity"),
    ParamSpec("diagnostics.period", 1.0, "seconds between /diagnostics messages"),
    ParamSpec("diagnostics.stale_timeout", 2.0, "an input silent this long (s) raises a WARN"),
    ParamSpec("diagnostics.latency_window", 200, "latency percentiles over the last N outputs"),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"parameter {name}={value!r} is invalid; choose one of {', '.join(choices)}")
    return value


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"parameter {name}={value} must be {'>= 0' if allow_zero else '> 0'}")
    return value


@dataclass
class NodeSettings:
    """The node's parameters after validation (raises ValueError with the parameter's name)."""

    values: dict[str, Any]
    pipeline: PipelineSettings = field(init=False)
    thermal: NormalizerConfig = field(init=False)

    def __post_init__(self) -> None:
        v = self.values
        missing = [n for n in PARAM_NAMES if n not in v]
        if missing:
            raise ValueError(f"missing parameters: {missing}")
        _choice("backend", v["backend"], BACKEND_NAMES)
        _choice("precision", v["precision"], PRECISIONS)
        try:
            resolution = parse_resolution(v["fusion.resolution"])
        except ValueError as exc:
            raise ValueError(f"parameter fusion.resolution: {exc}") from None
        _choice("model.variant", v["model.variant"], VARIANTS)
        _choice("qos.reliability", v["qos.reliability"], INPUT_RELIABILITIES)
        _choice("output_qos.reliability", v["output_qos.reliability"], RELIABILITIES)
        _positive("sync.slop", v["sync.slop"])
        for name in ("sync.queue_size", "qos.depth", "output_qos.depth", "diagnostics.latency_window"):
            if int(v[name]) < 1:
                raise ValueError(f"parameter {name}={v[name]} must be >= 1")
        for name in ("diagnostics.period", "diagnostics.stale_timeout"):
            _positive(name, v[name])
        _positive("max_pair_age", v["max_pair_age"], allow_zero=True)
        _positive("threads", v["threads"], allow_zero=True)
        if not 0.0 <= v["segmentation.max_rate"] < float("inf"):  # NaN fails too
            raise ValueError(f"parameter segmentation.max_rate={v['segmentation.max_rate']} must be >= 0 (Hz; 0 = "
                             "a mask for every pair)")
        if not 0.0 <= v["overlay.alpha"] <= 1.0:
            raise ValueError(f"parameter overlay.alpha={v['overlay.alpha']} must be in [0, 1]")
        for name in ("segmentation.min_confidence", "segmentation.min_object_confidence"):
            if not 0.0 <= v[name] < 1.0:
                raise ValueError(f"parameter {name}={v[name]} must be in [0, 1)")
        if not 0.0 < v["segmentation.detector_min_score"] < 1.0:
            raise ValueError(f"parameter segmentation.detector_min_score={v['segmentation.detector_min_score']} "
                             "must be in (0, 1)")
        try:
            parse_homography(v["registration.homography"])
        except ValueError as exc:
            raise ValueError(f"parameter registration.homography: {exc}") from exc
        self.thermal = NormalizerConfig(
            mode=v["thermal.mode"],
            low_percentile=float(v["thermal.low_percentile"]),
            high_percentile=float(v["thermal.high_percentile"]),
            ema_alpha=float(v["thermal.ema_alpha"]),
            fixed_min=float(v["thermal.fixed_min"]),
            fixed_max=float(v["thermal.fixed_max"]),
            min_span=float(v["thermal.min_span"]),
        )
        self.thermal.validate()
        self.pipeline = PipelineSettings(
            model=str(Path(v["model_path"]).expanduser()) if v["model_path"] else v["model.variant"],
            weights=Path(v["weights_path"]).expanduser() if v["weights_path"] else None,
            backend=v["backend"],
            precision=v["precision"],
            threads=int(v["threads"]),
            device=v["device"],
            engine_path=Path(v["engine_path"]) if v["engine_path"] else None,
            engine_dir=Path(v["engine_dir"]) if v["engine_dir"] else None,
            resolution=resolution,
            scale_adapted=bool(v["fusion.scale_adapted"]),
            min_confidence=float(v["segmentation.min_confidence"]),
            min_object_confidence=float(v["segmentation.min_object_confidence"]),
            detector=bool(v["segmentation.detector"]),
            detector_min_score=float(v["segmentation.detector_min_score"]),
        )

    @property
    def resolution(self) -> str | tuple[int, int]:
        return self.pipeline.resolution

    def __getitem__(self, name: str) -> Any:
        return self.values[name]
