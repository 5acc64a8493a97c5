"""The fusion pipeline: image math around the students (`fusion`), class ids after fusion (`segmentation`),
and the one builder that decides what a pipeline is made of (`builder`)."""

from sage_ros.pipeline.builder import PipelineError, PipelineSettings, build_pipeline
from sage_ros.pipeline.fusion import (
    DEFAULT_RESOLUTION,
    RESOLUTION_MODES,
    FusionPipeline,
    FusionResult,
    Student,
    detail_gain,
    fusion_size,
    parse_resolution,
    resize_area,
    unsharp,
    upsample_with_detail,
)

__all__ = [
    "DEFAULT_RESOLUTION",
    "RESOLUTION_MODES",
    "FusionPipeline",
    "FusionResult",
    "PipelineError",
    "PipelineSettings",
    "Student",
    "build_pipeline",
    "detail_gain",
    "fusion_size",
    "parse_resolution",
    "resize_area",
    "unsharp",
    "upsample_with_detail",
]
