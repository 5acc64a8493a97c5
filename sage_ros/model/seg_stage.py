"""Class ids at the RGB size after a fusion below it: the segmentation network run on the final fused Y.

Why: the segmentation network was trained on full-size frames. Run inside the model at the fusion size
(`fusion.resolution: thermal`, 1.67x smaller per side on MSRS's simulated rig) it sees every object 1.67x
smaller, and its mean F1 against the MSRS eval boxes falls from 0.52 to 0.28 (both students alike). Run at
the RGB size on the final fused Y (the detail layer added back) and the registered IR, it gives 0.52 again.

So below the RGB size the student runs fusion-only and this stage produces the class ids, on a CPU runtime
(`cpu_graph`), and only when someone uses them (the node asks only while mask or overlay have
subscribers). At the RGB size the default model's own seg output is used, unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sage_ros.model.cpu_graph import CpuGraph, runtime_beside


class SegStageError(RuntimeError):
    """A segmentation graph that cannot run here."""


class FullResSegmenter:
    """Callable (fused_y, ir) -> class ids (HxW uint8), both inputs HxW float32 in [0, 1] at the RGB size."""

    def __init__(self, graph: str | Path, runtime: str = "auto", threads: int = 0, precision: str = "fp32") -> None:
        self.path = Path(graph)
        if not self.path.is_file():
            raise SegStageError(f"segmentation graph {self.path} does not exist")
        try:
            self._graph = CpuGraph(self.path, runtime, threads, precision, error=SegStageError,
                                   what="segmentation at the RGB size")
        except SegStageError:
            raise
        except Exception as exc:  # the runtimes raise their own types for a bad file
            raise SegStageError(f"segmentation graph {self.path} could not be loaded: {exc}") from exc
        self.runtime = self._graph.runtime

    def __call__(self, fused_y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        feeds = {"fused_y": np.ascontiguousarray(fused_y, np.float32)[None, None],
                 "ir": np.ascontiguousarray(ir, np.float32)[None, None]}
        ids = np.asarray(self._graph.run(feeds)[0])
        return ids.reshape(fused_y.shape).astype(np.uint8, copy=False)


def segmenter_beside(backend, graph: str | Path, threads: int = 0) -> FullResSegmenter:
    """The stage on the fusion backend's own CPU runtime and precision where it has one (else the CPU)."""
    runtime, precision = runtime_beside(backend)
    return FullResSegmenter(graph, runtime=runtime, threads=threads, precision=precision)
