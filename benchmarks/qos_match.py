"""How many pairs of large frames the fusion node fuses, per camera-publisher reliability and node QoS.

A "camera" in this process publishes 640x512 mono16 thermal + 1280x720 bgr8 RGB (about 3.4 MB a
pair) with RELIABLE or BEST_EFFORT QoS; the node runs in a child process over real DDS (Fast DDS on
loopback) with the default settings or an explicit `qos.reliability`. The camera exists before the
node starts (a driver that is already up). Pairs are paced at a rate the model sustains: the next
pair goes out once the previous one came back (or after `--timeout` s without it), so every loss
is a transport loss, not a superseded pair. Prints fused/sent per row and the node's DDS-loss counters.

    python benchmarks/qos_match.py [--pairs 20] [--publisher reliable best_effort] [--node-qos default]
    # the same rows against an older checkout of the package ("before"):
    python benchmarks/qos_match.py --node-src /tmp/old_checkout   # a folder holding sage_ros/

The machine is shared and loaded: state the load next to the numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))  # the DDS harness, test/harness.py

from harness import (  # noqa: E402
    NodeProcess,
    Probe,
    exported_student,
    local_dds_env,
    pick_domain_id,
)

from sage_ros.image.encodings import encode_image  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from node_latency import centred_homography, frames  # noqa: E402

OFFICIAL = REPO.parent / "shared" / "sage_official"


class SourceNodeProcess(NodeProcess):
    """NodeProcess that imports `sage_ros` from another source tree (to measure an older version)."""

    def __init__(self, *args, src: Path | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.src = src

    def start(self) -> NodeProcess:
        if self.src is None:
            return super().start()
        env = dict(local_dds_env(self.domain_id), PYTHONUNBUFFERED="1",  # host-only DDS, own domain
                   PYTHONPATH=str(self.src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # cwd = the other tree: `python -m` puts it first on sys.path.
        cmd = self.command()
        if not (self.src / "sage_ros" / "node" / "run.py").is_file():  # older trees: no run module yet
            cmd = [("sage_ros.node.fusion_node" if c == "sage_ros.node.run" else c) for c in cmd]
        self.proc = subprocess.Popen(cmd, env=env, cwd=str(self.src), stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def shm_only_profile(profile: Path, workdir: Path) -> Path:
    """A copy of a Fast DDS profile without its UDP transport: same-host traffic only (the segment
    size is what matters between processes on one host, and nothing may leave this machine)."""
    head, sep, users = profile.read_text().partition("<userTransports>")
    text = head + sep + re.sub(r"\s*<transport_id>sage_udp</transport_id>", "", users, count=1)
    out = workdir / f"shm_only_{profile.name}"
    out.write_text(text)
    return out


def run_row(model: Path, publisher: str, node_qos: str, pairs: int, timeout: float, threads: int,
            src: Path | None, workdir: Path, salt: int, profile: Path | None = None) -> dict:
    thermal, rgb = frames(OFFICIAL, (640, 512), (1280, 720))
    t_fields, r_fields = encode_image(thermal, "mono16"), encode_image(rgb, "bgr8")
    params = {
        "model_path": str(model), "backend": "onnxruntime", "threads": threads,
        "registration.homography": centred_homography((640, 512), (1280, 720)),
        "diagnostics.period": 0.5,
    }
    if node_qos != "default":
        params["qos.reliability"] = node_qos
    domain = pick_domain_id(salt)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    if profile is not None:  # for the camera (this process) only: the node keeps Fast DDS defaults
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    probe = Probe(domain, input_reliability=publisher)  # the camera is up before the node
    os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    node = SourceNodeProcess(params, domain, workdir / f"node_{publisher}_{node_qos}.log", src=src).start()
    row = {"publisher": publisher + (" + large-frames profile" if profile else ""), "node_qos": node_qos,
           "sent": 0, "fused": 0}
    try:
        if not probe.wait_for_node(90.0):
            raise RuntimeError(f"node did not come up:\n{node.log_text()}")
        if node_qos in ("default", "auto") and src is None:
            # A node that started before discovery finished subscribes BEST_EFFORT first and re-matches
            # within about a second: measure the settled state (the switch itself is tested elsewhere).
            from rclpy.qos import ReliabilityPolicy

            want = ReliabilityPolicy.RELIABLE if publisher == "reliable" else ReliabilityPolicy.BEST_EFFORT
            probe.wait_until(lambda: all(
                i.qos_profile.reliability == want
                for t in ("/thermal/image_raw", "/rgb/image_raw")
                for i in probe.node.get_subscriptions_info_by_topic(t) if i.node_name == "sage_fusion"), 20.0)
        time.sleep(1.0)  # let discovery settle
        latencies = []
        start = time.monotonic()
        for k in range(pairs):
            stamp = time.time_ns()
            probe.publish("thermal/image_raw", t_fields, stamp, "thermal")
            probe.publish("rgb/image_raw", r_fields, stamp, "rgb")
            row["sent"] += 1
            # The first pair also pays the first inference: a longer wait.
            wait = timeout * (3 if k == 0 else 1)
            if probe.wait_until(lambda s=stamp: any(_stamp(m) == s for _, m in probe.messages("fused/image_raw")),
                                wait):
                row["fused"] += 1
                latencies.append((time.time_ns() - stamp) * 1e-9)
            time.sleep(0.1)
        row["seconds"] = time.monotonic() - start
        time.sleep(1.5)
        status = probe.latest_status() or {}
        row["node"] = {k: v for k, v in status.items() if k.startswith(("drop_dds", "drop_qos", "thermal_received",
                                                                       "rgb_received", "qos_"))}
        row["median_latency_s"] = sorted(latencies)[len(latencies) // 2] if latencies else float("nan")
        log = node.log_text()
        row["subscribed"] = [line.split("subscribed ", 1)[1][:60] for line in log.splitlines()
                             if "subscribed /" in line and "image_raw" in line]
    finally:
        probe.close()
        node.stop()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--publisher", nargs="+", default=["reliable", "best_effort"])
    ap.add_argument("--node-qos", nargs="+", default=["default"], help="default | auto | reliable | best_effort")
    ap.add_argument("--timeout", type=float, default=12.0, help="seconds to wait for each pair's output")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--node-src", type=Path, default=None, help="folder holding another sage_ros/ to run")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--publisher-profile", type=Path, default=None,
                    help="Fast DDS profile for the camera process, e.g. config/fastdds_large_frames.xml "
                         "(used without its UDP transport)")
    args = ap.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    print(f"CPU: {os.cpu_count()} cores, avx2={'avx2' in flags} avx512f={'avx512f' in flags}; "
          f"load average {os.getloadavg()[0]:.1f} at start (shared machine)")
    workdir = Path(tempfile.mkdtemp(prefix="qos_match_"))
    model = args.model or exported_student(OFFICIAL / "checkpoints.pt", Path(tempfile.gettempdir()) / "sage_models")
    profile = shm_only_profile(args.publisher_profile, workdir) if args.publisher_profile else None
    rows = []
    salt = 0
    for node_qos in args.node_qos:
        for publisher in args.publisher:
            salt += 1
            row = run_row(model, publisher, node_qos, args.pairs, args.timeout, args.threads, args.node_src,
                          workdir, salt, profile)
            rows.append(row)
            print(row, flush=True)
    src = f" (node from {args.node_src})" if args.node_src else ""
    print(f"\n| camera publisher | node qos.reliability{src} | fused / sent | median latency | node counters |")
    print("|---|---|---|---|---|")
    for r in rows:
        counters = ", ".join(f"{k} {v}" for k, v in sorted(r["node"].items()))
        print(f"| {r['publisher'].upper()} | {r['node_qos']} | {r['fused']} / {r['sent']} | "
              f"{r['median_latency_s']:.2f} s | {counters} |")
    print(f"load average {os.getloadavg()[0]:.1f} at end; logs in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
