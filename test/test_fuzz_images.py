"""Fuzzing the image path with hypothesis: arbitrary sensor_msgs/Image field combinations.

1. Pure Python, no DDS (>= 10^4 examples, fast): every message goes through the node's arrival check
   (`check_message`) and, when it passes, the worker's decode path (decode -> thermal normalisation
   or colour conversion). No exception other than an `ImageInputError` may escape, every rejection
   names its cause (one of the diagnostics causes, with a non-empty detail), and an independent
   oracle says which messages must pass and which cause a rejected one must carry.
2. A bounded DDS run: a few hundred malformed messages published to the real node in another
   process; it survives, and its diagnostics count each one under the cause the oracle predicts.
"""

from __future__ import annotations

import math
import os
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sage_ros.image.encodings import (  # noqa: E402
    THERMAL_ENCODINGS,
    VISIBLE_ENCODINGS,
    ImageInputError,
    check_message,
)
from sage_ros.image.thermal import ThermalNormalizer  # noqa: E402
from sage_ros.node.processing import PairProcessor, classify_error  # noqa: E402

EXAMPLES = int(os.environ.get("SAGE_FUZZ_EXAMPLES", "10000"))
# Bytes per pixel of each encoding the package decodes (independent of sage_ros.image.encodings' table).
BPP = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "32FC1": 4, "rgb8": 3, "bgr8": 3, "rgba8": 4,
       "bgra8": 4, "yuv422": 2, "uyvy": 2, "yuv422_yuy2": 2, "yuyv": 2}
YUV = {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
# Encodings real drivers send that the node does not take, and near misses of ones it does.
FOREIGN = ["", " ", "bayer_rggb8", "bayer_grbg16", "16SC1", "8UC3", "32FC3", "64FC1", "rgb16", "bgra16",
           "MONO16", "Mono8", "mono16 ", "jpeg", "nv21", "yuv420", "\x00", "mono8\x00", "ü8"]
SPECIAL_FLOATS = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 3.4028235e38, -3.4028235e38,
                  1.4e-45, -1.4e-45, 1.1754944e-38, 24.5, -273.15, 1e30]
CAUSES = {"unsupported_encoding", "malformed", "invalid_pixels"}


def _encodings(accepted: tuple[str, ...]) -> st.SearchStrategy[str]:
    # Weighted towards encodings this input takes, so most examples reach the decoder.
    pools = {"mine": st.sampled_from(accepted), "any": st.sampled_from(sorted(BPP)),
             "foreign": st.sampled_from(FOREIGN), "text": st.text(max_size=10)}
    return st.sampled_from(["mine"] * 6 + ["any", "foreign", "text"]).flatmap(pools.__getitem__)


# Strategies are built once: building them inside the composite costs more than the example itself.
_ROLE = st.sampled_from(["thermal", "rgb"])
_ENCODING = {"thermal": _encodings(THERMAL_ENCODINGS), "rgb": _encodings(VISIBLE_ENCODINGS)}
_SMALL = st.integers(1, 24)
_WIDTH = st.one_of(_SMALL, _SMALL, st.sampled_from([0, 1, 2, 3, 255, 100_000, 2**31 - 1, 2**32 - 1]))
_HEIGHT = st.one_of(_SMALL, _SMALL, st.sampled_from([0, 1, 2, 100_000, 2**31 - 1, 2**32 - 1]))
_BPP_ANY = st.integers(1, 4)
_KIND = st.integers(0, 6)  # which step / length recipe (small integers shrink well)
_PAD = st.integers(1, 16)
_ANY_STEP = st.integers(0, 200)
_ANY_LENGTH = st.integers(0, 300)
_FLOATS = st.lists(st.sampled_from(SPECIAL_FLOATS), min_size=1, max_size=8)
_BOOL = st.booleans()
_SEED = st.integers(0, 2**32 - 1)
_ENDIAN = st.sampled_from([0, 1, 2, 255])


@st.composite
def image_cases(draw: st.DrawFn) -> SimpleNamespace:
    role = draw(_ROLE)
    encoding = draw(_ENCODING[role])
    width, height = draw(_WIDTH), draw(_HEIGHT)
    bpp = BPP.get(encoding) or draw(_BPP_ANY)
    row = width * bpp
    kind = draw(_KIND)
    step = [row, row, row + draw(_PAD), draw(_ANY_STEP), max(row - 1, 0), 2**32 - 1, 2**31][kind]
    needed = step * max(height - 1, 0) + row if height and width else 0
    kind = draw(_KIND)
    length = [needed, needed, step * height, max(needed - 1, 0), needed + 7, draw(_ANY_LENGTH), 0][kind]
    length = min(length, 200_000)  # keep each example cheap; bigger claims are truncated messages
    if encoding == "32FC1" and draw(_BOOL):
        floats = draw(_FLOATS)
        big = draw(_BOOL)
        unit = b"".join(struct.pack(">f" if big else "<f", f) for f in floats)
        data = (unit * (length // len(unit) + 1))[:length]
        is_bigendian = int(big)
    else:
        data = np.random.default_rng(draw(_SEED)).bytes(length)
        is_bigendian = draw(_ENDIAN)
    return SimpleNamespace(role=role, encoding=encoding, width=width, height=height, step=step,
                           is_bigendian=is_bigendian, data=data)


def oracle(case: SimpleNamespace) -> str | None:
    """The cause the node must report for this message, or None when it must be accepted.

    None can still end as `invalid_pixels` (32FC1 holding NaN/inf): decided from the decoded values.
    """
    accepted = THERMAL_ENCODINGS if case.role == "thermal" else VISIBLE_ENCODINGS
    if case.encoding not in accepted:
        return "unsupported_encoding"
    row = case.width * BPP[case.encoding]
    if case.width == 0 or case.height == 0 or case.step < row:
        return "malformed"
    if case.encoding in YUV and case.width % 2:
        return "malformed"
    if len(case.data) < case.step * (case.height - 1) + row:
        return "malformed"
    return None


def run_path(case: SimpleNamespace, processor: PairProcessor) -> str | None:
    """The node's path for one message: arrival check, then the worker's decode. Returns the cause."""
    accepted = THERMAL_ENCODINGS if case.role == "thermal" else VISIBLE_ENCODINGS
    try:
        check_message(case, accepted, case.role)
        if case.role == "thermal":
            for _ in range(2):  # twice: the smoothed bounds of a second frame go through other code
                out = processor.thermal_unit(case)
                assert out.shape == (case.height, case.width) and out.dtype == np.float32
                assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        else:
            out = processor.visible_bgr(case)
            assert out.shape == (case.height, case.width, 3) and out.dtype == np.uint8
        return None
    except ImageInputError as exc:
        cause = classify_error(exc)
        assert cause in CAUSES, f"{cause}: {exc}"
        assert str(exc).strip(), "a rejection without a message"
        assert getattr(exc, "detail", ""), f"no detail (cause + detail are what the log names once): {exc}"
        return cause


def test_fuzzed_image_fields_never_escape_and_always_name_the_cause():
    seen = {"examples": 0, "accepted": 0}
    causes: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(image_cases())
    def check(case: SimpleNamespace) -> None:
        seen["examples"] += 1
        processor = PairProcessor(None, ThermalNormalizer())  # decode path only: no model needed
        expected = oracle(case)
        cause = run_path(case, processor)
        if expected is None:
            if cause is not None:
                # Accepted fields can still hold unusable values: only NaN/inf temperatures.
                assert cause == "invalid_pixels" and case.encoding == "32FC1", (cause, case)
        else:
            assert cause == expected, (cause, expected, case.encoding, case.width, case.height, case.step,
                                       len(case.data))
        key = cause or "accepted"
        causes[key] = causes.get(key, 0) + 1

    started = time.monotonic()
    check()
    elapsed = time.monotonic() - started
    print(f"fuzz: {seen['examples']} examples in {elapsed:.1f} s; outcomes {dict(sorted(causes.items()))}")
    assert seen["examples"] >= EXAMPLES
    # The generator must reach every outcome, else the run proves little.
    assert {"accepted", "unsupported_encoding", "malformed", "invalid_pixels"} <= set(causes), causes


def test_32fc1_extreme_temperatures_normalise_to_finite_unit_range():
    # The float32 range ends: (x - lo) overflows to inf there, which must still clip into [0, 1].
    processor = PairProcessor(None, ThermalNormalizer())
    frame = np.array([[3.4028235e38, -3.4028235e38], [0.0, 24.5]], np.float32)
    msg = SimpleNamespace(encoding="32FC1", width=2, height=2, step=8, is_bigendian=0, data=frame.tobytes())
    out = processor.thermal_unit(msg)
    assert np.isfinite(out).all() and 0.0 <= out.min() <= out.max() <= 1.0


# --- the real node over DDS ------------------------------------------------------------------------
DDS_MESSAGES = 300


def _dds_cases(count: int) -> list[SimpleNamespace]:
    """Malformed messages drawn from a seeded generator (each must be rejected on arrival).

    No NUL in encodings here: a ROS string cannot carry one (it would arrive cut short).
    """
    cases: list[SimpleNamespace] = []
    rng = np.random.default_rng(7)
    while len(cases) < count:
        case = _random_case(rng)
        if oracle(case) is not None and "\x00" not in case.encoding:
            cases.append(case)
    return cases


def _random_case(rng: np.random.Generator) -> SimpleNamespace:
    role = ["thermal", "rgb"][int(rng.integers(2))]
    pool = sorted(BPP) + FOREIGN
    encoding = pool[int(rng.integers(len(pool)))]
    width = int(rng.choice([0, 1, 3, 7, 16, 100_000, 2**32 - 1]))
    height = int(rng.choice([0, 1, 2, 9, 100_000, 2**32 - 1]))
    row = width * BPP.get(encoding, 1)
    step = min(int(rng.choice([row, row + 4, max(row - 1, 0), 0])), 2**32 - 1)  # uint32 field
    length = int(rng.choice([0, 1, 100, 1000, step * max(height - 1, 0) + row - 1]))
    length = max(0, min(length, 100_000))
    return SimpleNamespace(role=role, encoding=encoding, width=width, height=height, step=step,
                           is_bigendian=int(rng.integers(2)), data=rng.bytes(length))


def test_hundreds_of_malformed_messages_over_dds_are_counted_by_cause_and_survived(tmp_path_factory,
                                                                                   checkpoint_path: Path):
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
    from harness import NodeProcess, Probe, exported_student, pick_domain_id

    model = exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")
    domain = pick_domain_id(41)
    cases = _dds_cases(DDS_MESSAGES)
    expected: dict[str, int] = {}
    for c in cases:
        key = f"{c.role}_{oracle(c)}"
        expected[key] = expected.get(key, 0) + 1
    params = {"model_path": str(model), "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable",
              "qos.depth": 50, "diagnostics.period": 0.3}
    log = tmp_path_factory.mktemp("fuzz_node") / "node.log"
    with NodeProcess(params, domain, log) as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        from sensor_msgs.msg import Image

        sent = {"thermal": 0, "rgb": 0}
        batch = 10  # <= the probe's writer history (10) and the node's reader history (50): nothing overwritten
        for start in range(0, len(cases), batch):
            for c in cases[start:start + batch]:
                msg = Image()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
                msg.encoding, msg.width, msg.height, msg.step = c.encoding, c.width, c.height, c.step
                msg.is_bigendian, msg.data = c.is_bigendian, c.data
                probe.pubs[f"{c.role}/image_raw"].publish(msg)
                sent[c.role] += 1
            # Bounded wait after each batch (no timing assertion: 60 s only catches a dead node).
            assert probe.wait_for_status(
                lambda s: int(s["thermal_received"]) == sent["thermal"] and int(s["rgb_received"]) == sent["rgb"],
                60.0,
            ) is not None, (sent, probe.latest_status())
        status = probe.wait_for_status(lambda s: int(s["drops_total"]) >= len(cases), 10.0)
        assert status is not None, probe.latest_status()
        got = {k[len("drop_"):]: int(v) for k, v in status.items()
               if k.startswith("drop_") and k[len("drop_"):].startswith(("thermal_", "rgb_"))}
        assert got == expected, (got, expected)
        assert int(status["drops_total"]) == len(cases) and status["pairs"] == "0"
        assert proc.alive()
        text = proc.log_text()
        # Every distinct unsupported encoding is named in the log at its first occurrence.
        for enc in {c.encoding for c in cases if oracle(c) == "unsupported_encoding"}:
            assert repr(enc) in text, f"{enc!r} never named in the log"
        assert "Traceback" not in text
    assert os.path.exists(log)
