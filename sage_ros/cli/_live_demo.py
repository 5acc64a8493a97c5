"""`sage-ros demo --live`: image pairs published as camera topics, fused by the node in another process.

`run_live_demo` starts `sage_fusion` as a child process on a private ROS domain, publishes each pair
(thermal mono8 or mono16, RGB bgr8, same stamp) from a separate probe node, records what the node
publishes on `fused/image_raw`, writes it as PNGs and returns statistics. `sage-ros demo --live`
(cli/demo.py) calls it; the tests call it on small crops. `_`-prefixed: a helper, not a subcommand.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.devtools.harness import NodeProcess, Probe, pick_domain_id
from sage_ros.image.encodings import decode_msg
from sage_ros.node.stats import percentiles_ms


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


def _thermal_frame(path: Path, encoding: str) -> np.ndarray:
    grey = _read(path, cv2.IMREAD_GRAYSCALE)
    if encoding == "mono8":
        return grey
    if encoding == "mono16":
        # Spread the 8-bit sample over 14-bit counts with an offset, like a raw radiometric core, so
        # the node's percentile normalisation has real work to do.
        return (grey.astype(np.uint16) * 48 + 2000).astype(np.uint16)
    raise ValueError(f"thermal_encoding must be mono8 or mono16, got {encoding!r}")


def run_live_demo(
    ir_paths: Sequence[str | Path],
    vis_paths: Sequence[str | Path],
    onnx_path: str | Path,
    out_dir: str | Path,
    rate_hz: float = 5.0,
    thermal_encoding: str = "mono8",
    backend: str = "auto",
    threads: int = 0,
    wait_for_each: bool = True,
    timeout_per_pair: float = 60.0,
    startup_timeout: float = 60.0,
    domain_id: int | None = None,
    precision: str = "auto",
    resolution: str = "thermal",
) -> dict[str, Any]:
    """Publish the pairs live through the fusion node and save what it publishes.

    With `wait_for_each` (default) the next pair goes out once the previous one came back fused (or
    timed out), at most at `rate_hz`: on a CPU the model is slower than a camera, and the node fuses
    only the newest pair, so without waiting most sample pairs would be superseded by design.
    Returns pairs_sent, fused_received, latency_ms (stamp -> received, per pair), latency p50/max,
    files written, the node's last diagnostics and its log path.
    """
    if len(ir_paths) != len(vis_paths) or not ir_paths:
        raise ValueError(f"need matching, non-empty path lists, got {len(ir_paths)} and {len(vis_paths)}")
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"model {onnx_path} not found: run `sage-ros weights fetch && sage-ros export`")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [
        (Path(i).stem, _thermal_frame(Path(i), thermal_encoding), _read(Path(v), cv2.IMREAD_COLOR))
        for i, v in zip(ir_paths, vis_paths, strict=True)
    ]
    domain = pick_domain_id(31) if domain_id is None else domain_id
    params = {
        "model_path": str(onnx_path),
        "backend": backend,
        "threads": int(threads),
        "precision": precision,
        "fusion.resolution": resolution,
        # Same-host demo: RELIABLE so no frame is lost to UDP fragment drops (see docs/node.md).
        "qos.reliability": "reliable",
        "diagnostics.period": 0.5,
    }
    log_path = out_dir / "node.log"
    stats: dict[str, Any] = {"pairs_sent": 0, "fused_received": 0, "latency_ms": [], "files": []}
    with NodeProcess(params, domain, log_path) as proc, Probe(domain) as probe:
        if not probe.wait_for_node(startup_timeout):
            raise RuntimeError(f"the fusion node did not come up within {startup_timeout} s; see {log_path}")
        by_stamp: dict[int, str] = {}
        period = 1.0 / rate_hz
        for name, thermal, vis in pairs:
            started = time.monotonic()
            stamp = time.time_ns()
            by_stamp[stamp] = name
            # Same stamp on both: a driver pair triggered together (hardware sync).
            probe.publish_array("thermal/image_raw", thermal, thermal_encoding, stamp, "thermal_camera")
            probe.publish_array("rgb/image_raw", vis, "bgr8", stamp, "rgb_camera")
            stats["pairs_sent"] += 1
            if wait_for_each:
                probe.wait_until(
                    lambda s=stamp: any(_stamp_ns(m) == s for _, m in probe.messages("fused/image_raw")),
                    timeout_per_pair,
                )
            time.sleep(max(0.0, period - (time.monotonic() - started)))
        # Without waiting for each pair, give the last ones time to come back (superseded ones never do).
        settle = 0.2 if wait_for_each else min(timeout_per_pair, 10.0)
        probe.wait_until(lambda: len(probe.messages("fused/image_raw")) >= len(pairs), settle)
        received = probe.messages("fused/image_raw")
        for recv_ns, msg in received:
            stamp = _stamp_ns(msg)
            name = by_stamp.get(stamp)
            if name is None:
                continue
            rgb = decode_msg(msg)
            path = out_dir / f"{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            stats["files"].append(str(path))
            stats["latency_ms"].append((recv_ns - stamp) * 1e-6)
        stats["fused_received"] = len(stats["files"])
        # Diagnostics whose counters include the last pair: a period (0.5 s) or more on a loaded machine,
        # so wait for that status rather than a fixed time (a fixed 0.6 s found none under CI load).
        def counted_all() -> bool:
            status = probe.latest_status()
            return status is not None and status.get("outputs") == str(stats["fused_received"])

        probe.wait_until(counted_all, 10.0)
        stats["diagnostics"] = probe.latest_status()
        stats["node_alive"] = proc.alive()
    lat = percentiles_ms(stats["latency_ms"])
    stats["latency_p50_ms"], stats["latency_max_ms"] = lat["p50"], lat["max"]
    stats["node_log"] = str(log_path)
    return stats


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
