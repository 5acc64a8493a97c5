"""The one place that decides what a fusion pipeline is made of: `build_pipeline(PipelineSettings)`.

Every entry point (the node, `sage-ros fuse`, `eval-bag`, `demo`, the benchmarks) fills `PipelineSettings`
and calls it. It chooses the student (`auto`, `sage`, `fast` or an ONNX file), backend and precision, the
scale-adapted student below the RGB size, and the segmentation stage; each choice is a start-up note
(`FusionPipeline.notes`). Model files are checked here; sessions start on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sage_ros.backends import BackendConfig, BackendError, FusionBackend, auto_order, create_backend
from sage_ros.pipeline.detection import DEFAULT_MIN_SCORE
from sage_ros.pipeline.fusion import DEFAULT_RESOLUTION, FusionPipeline, Student, parse_resolution
from sage_ros.pipeline.segmentation import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_OBJECT_CONFIDENCE, Segmenter

log = logging.getLogger(__name__)

class PipelineError(RuntimeError):
    """Settings or model files that cannot make a pipeline, with what to do about it."""


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that decides a pipeline. Entry points fill it from their options and nothing else."""

    model: str = "auto"  # auto | sage | fast | path to an ONNX fusion model (inputs vis_y, ir; output fused_y)
    weights: Path | None = None  # sage: the checkpoint to export (default: the fetched one); torch: its weights
    backend: str = "auto"  # auto | tensorrt | openvino | onnxruntime | torch
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 | int8
    threads: int = 0  # CPU threads per runtime; 0 lets it decide
    device: str = "cpu"  # torch backend only
    engine_path: Path | None = None  # TensorRT: an explicit engine (runs at every fusion size)
    engine_dir: Path | None = None  # TensorRT: the engine cache
    resolution: str | tuple[int, int] = DEFAULT_RESOLUTION  # thermal | rgb | (height, width)
    scale_adapted: bool = True  # below the RGB size, the scale-adapted student in place of the released one
    segmentation: bool = True  # class ids available (computed only when asked for)
    min_confidence: float = DEFAULT_MIN_CONFIDENCE  # below this class probability: background
    min_object_confidence: float = DEFAULT_MIN_OBJECT_CONFIDENCE  # a region peaking below this: background
    detector: bool = True  # the COCO object detector's boxes in the masks (when its files are fetched)
    detector_min_score: float = DEFAULT_MIN_SCORE  # the detector's lowest kept box score
    calib: Path | None = None  # int8 calibration pairs (default: the sample pairs)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))


def resolve_model(model: str, backend: str, weights: Path | None = None) -> tuple[str, str]:
    """(the model `auto` stands for, why; empty for an explicit choice), decided from the machine, never from load.
    Given weights (a student checkpoint) mean the released topology: `auto` is then `sage`."""
    from sage_ros.backends import tensorrt_problem
    from sage_ros.cpu_features import read_cpu_features
    from sage_ros.model.model_variants import choose_variant, fast_quality

    if model != "auto" or Path(model).is_file():
        return model, ""
    if weights is not None and Path(weights).suffix != ".npz":
        return "sage", f"model auto -> sage: weights {Path(weights).name} given"
    gpu_problem = tensorrt_problem() if backend in ("auto", "tensorrt") else f"backend {backend}"
    return choose_variant(read_cpu_features(), gpu_problem, fast_quality())


def student_config(settings: PipelineSettings) -> BackendConfig:
    """The main student's BackendConfig (settings.model already concrete: `build_pipeline` resolves `auto`), its
    model file exported (sage) or quantised (int8) when needed."""
    from sage_ros.model.model_files import ensure_int8, ensure_onnx
    from sage_ros.model.model_variants import ModelVariantError, fast_onnx, fast_weights
    from sage_ros.paths import default_checkpoint

    model = str(settings.model or "sage")
    weights = Path(settings.weights) if settings.weights else None
    torch = settings.backend == "torch"
    try:
        if model == "fast" and not Path(model).is_file():
            # Its own weights (.npz): a released-format checkpoint given for `sage` does not apply to it.
            own = weights if weights is not None and weights.suffix == ".npz" else fast_weights()
            onnx_path, weights = (None if torch else fast_onnx()), own
        elif model == "sage" and not Path(model).is_file():
            weights = weights or default_checkpoint()
            onnx_path = None if torch else ensure_onnx(None, weights)
        else:
            onnx_path = Path(model).expanduser()
            if not onnx_path.is_file():
                raise PipelineError(f"model file {onnx_path} does not exist: run `sage-ros weights fetch` or give "
                                    "an exported ONNX model (or model sage / fast)")
        if settings.precision == "int8" and settings.backend in ("onnxruntime", "openvino"):
            # CPU int8 runs a QDQ copy of the model (not one TensorRT parses: it needs symmetric int8 Q/DQ).
            onnx_path = ensure_int8(onnx_path, settings.calib)
    except ModelVariantError as exc:
        raise PipelineError(str(exc)) from exc
    if weights is not None and not weights.is_file():
        if torch or onnx_path is None:
            raise PipelineError(f"weights file {weights} does not exist: run `sage-ros weights fetch`")
        weights = None
    return BackendConfig(name=settings.backend, onnx_path=onnx_path, weights_path=weights,
                         precision=settings.precision, threads=settings.threads or None, device=settings.device,
                         engine_path=settings.engine_path, engine_dir=settings.engine_dir)


def check_startable(config: BackendConfig) -> None:
    """Fail now, with the reason, where the backend could not start later: no runtime, a missing or
    unreadable model file. Cheap: no session is created."""
    if config.name == "auto" and not auto_order():
        raise PipelineError("no inference runtime is installed: pip install openvino (or onnxruntime)")
    if config.name == "tensorrt":
        from sage_ros.backends import tensorrt_problem

        problem = tensorrt_problem()
        if problem:
            raise PipelineError(f"backend tensorrt cannot start: {problem}")
        if config.engine_path is not None:
            if not Path(config.engine_path).is_file():
                raise PipelineError(f"engine_path {config.engine_path} does not exist")
            return
    if config.name == "torch":
        if config.weights_path is None:
            raise PipelineError("the torch backend needs weights: run `sage-ros weights fetch` or pass --weights")
        return
    if config.onnx_path is None or not Path(config.onnx_path).is_file():
        raise PipelineError(f"model file {config.onnx_path} does not exist: run `sage-ros weights fetch`")
    try:
        import onnx
    except ImportError:
        return  # the runtime itself will judge the file when it starts
    try:
        graph = onnx.load(str(config.onnx_path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types for a damaged file
        raise PipelineError(f"model file {config.onnx_path} is not a readable ONNX model "
                            f"({type(exc).__name__}: {exc}): export or fetch it again") from None
    names = {i.name for i in graph.input}, {o.name for o in graph.output}
    if not {"vis_y", "ir"} <= names[0] or "fused_y" not in names[1]:
        raise PipelineError(f"model file {config.onnx_path} has inputs {sorted(names[0])} and outputs "
                            f"{sorted(names[1])}: a fusion model takes vis_y and ir and gives fused_y")


def reduced_student(settings: PipelineSettings, config: BackendConfig,
                    create: Callable[[BackendConfig], FusionBackend]) -> tuple[Student | None, str]:
    """The scale-adapted student for fusion below the RGB size, or None; and the note that says why."""
    from sage_ros.model.model_files import ensure_int8
    from sage_ros.model.scale_student import (
        DETAIL_GAIN,
        detail_reference,
        ensure_scale_onnx,
        is_released_student,
        shipped_weights,
    )

    if settings.resolution == "rgb":
        return None, ""
    if not settings.scale_adapted:
        return None, "scale-adapted student off: the main student runs at every fusion size"
    if config.engine_path is not None:
        return None, "scale-adapted student not used: the explicit engine_path runs at every fusion size"
    if not is_released_student(config):
        return None, "scale-adapted student not used: the main student is not the released one"
    if config.name == "torch":
        reduced = replace(config, weights_path=shipped_weights())
    else:
        onnx_path = ensure_scale_onnx()
        if settings.precision == "int8" and config.name in ("onnxruntime", "openvino"):
            onnx_path = ensure_int8(onnx_path, settings.calib)
        reduced = replace(config, onnx_path=onnx_path)
    check_startable(reduced)
    student = Student(lambda: create(reduced), "scale-adapted student", DETAIL_GAIN, detail_reference())
    return student, f"below the RGB size: the scale-adapted student ({shipped_weights().name})"


def segmenter_for(settings: PipelineSettings, config: BackendConfig) -> Segmenter | None:
    """The shipped segmentation network (with the released student that makes its fused input), on the student
    backend's own CPU runtime where it is one (OpenVINO, ONNX Runtime), else the best CPU runtime (beside
    TensorRT or torch)."""
    import importlib.util

    from sage_ros.backends import resolve_precision
    from sage_ros.model.detector_files import ensure_detector_graph
    from sage_ros.model.model_files import ensure_onnx, ensure_seg_graph
    from sage_ros.paths import default_checkpoint, default_onnx
    from sage_ros.pipeline.detection import ObjectDetector

    runtime = config.name if config.name in ("openvino", "onnxruntime") else "auto"
    precision = "fp32"
    # `auto` prefers OpenVINO: there `precision: auto` means bf16 on CPUs with it, as for the student.
    on_openvino = runtime == "openvino" or (runtime == "auto" and importlib.util.find_spec("openvino") is not None)
    if on_openvino and config.precision in ("auto", "bf16"):
        precision = resolve_precision("openvino", config.precision)[0]
    if not default_checkpoint().is_file() and not default_onnx().is_file():
        return None  # fusion needs no download (the fast student is shipped); masks do: said in the notes
    detector = None
    if settings.detector:
        try:
            detector = ObjectDetector(ensure_detector_graph(), runtime, settings.threads, precision,
                                      min_score=settings.detector_min_score)
        except FileNotFoundError:
            pass  # masks from the network alone: said in the notes
    return Segmenter(ensure_seg_graph(), ensure_onnx(), runtime, settings.threads, precision,
                     settings.min_confidence, min_object_confidence=settings.min_object_confidence,
                     detector=detector)


def build_pipeline(settings: PipelineSettings,
                   create: Callable[[BackendConfig], FusionBackend] = create_backend) -> FusionPipeline:
    """The pipeline these settings describe. create: starts a backend from a config (the node passes one
    that starts it at inference priority). Raises PipelineError (or BackendError) with what to do."""
    from sage_ros.graphs.seg_graph import SegNetError
    from sage_ros.model.model_variants import small_unsharp_of
    from sage_ros.model.scale_student import ScaleStudentError
    from sage_ros.paths import default_checkpoint
    from sage_ros.pipeline.segmentation import SegmentationError

    # `auto` resolved once, here: the student's config gets the concrete model, the notes say why.
    resolved, why = resolve_model(str(settings.model or "auto"), settings.backend, settings.weights)
    try:
        config = student_config(replace(settings, model=resolved))
        check_startable(config)
        # The fast student's .npz goes with it on every backend (int8 copies and engines have no sidecar).
        own_weights = config.weights_path is not None and Path(config.weights_path).suffix == ".npz"
        main = Student(lambda: create(config), "student",
                       small_unsharp=small_unsharp_of(config.weights_path if own_weights else config.onnx_path))
        reduced, reduced_why = reduced_student(settings, config, create)
        segmenter = segmenter_for(settings, config) if settings.segmentation else None
    except (ScaleStudentError, SegNetError, SegmentationError, BackendError, OSError, ValueError) as exc:
        raise PipelineError(str(exc)) from exc
    model = config.onnx_path if config.name != "torch" else config.weights_path
    notes = ([why] if why else []) + [f"student {model} on {config.name} ({config.precision}), fusion resolution "
             f"{_resolution_text(settings.resolution)}"]
    if reduced_why:
        notes.append(reduced_why)
    if segmenter is not None:
        notes.append(f"segmentation: {segmenter.path.name} at ~{segmenter.working_pixels} px on the released "
                     f"student's fusion there, min confidence {segmenter.min_confidence:g}, min object confidence "
                     f"{segmenter.min_object_confidence:g}")
        notes.append(f"object detector: {segmenter.detector.path.name} on the mean of the visible Y and the IR, "
                     f"min score {segmenter.detector.min_score:g}"
                     if segmenter.detector is not None else
                     "object detector: off" if not settings.detector else
                     "object detector: not fetched (masks from the MSRS-trained network alone, weak on other "
                     "cameras): run `sage-ros weights fetch`")
    elif settings.segmentation:
        notes.append(f"segmentation: off: masks need the released student (it makes the network's input) and "
                     f"{default_checkpoint()} is missing: run `sage-ros weights fetch`")
    else:
        notes.append("segmentation: off")
    for note in notes:
        log.info("%s", note)
    return FusionPipeline(main, settings.resolution, reduced, segmenter, tuple(notes))


def _resolution_text(resolution: str | tuple[int, int]) -> str:
    return resolution if isinstance(resolution, str) else f"{resolution[1]}x{resolution[0]}"
