"""cv_bridge is used when installed, except for the images upstream cv_bridge decodes wrongly: a row
padding that is not a multiple of the pixel size (sheared, no error) and, under NumPy >= 2, big-endian
multi-byte images (it raises). Those go through sage_ros.image.encodings."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.image.encodings import decode_msg, encode_image
from sage_ros.node.processing import cv_bridge_available, cv_bridge_problem

NUMPY2 = int(np.__version__.split(".")[0]) >= 2


@pytest.mark.parametrize(
    "encoding, width, padding, big, wrong",
    [
        ("rgb8", 10, 2, False, True),  # the cases: 2 bytes of padding on 3- and 4-byte pixels
        ("bgra8", 10, 2, False, True),
        ("32FC1", 10, 2, False, True),
        ("mono16", 10, 1, False, True),
        ("mono16", 10, 2, False, False),  # a whole pixel of padding: cv_bridge crops it correctly
        ("rgb8", 10, 3, False, False),
        ("mono8", 10, 3, False, False),
        ("yuv422", 10, 1, False, True),
        ("mono16", 10, 0, True, NUMPY2),  # NumPy 2 removed ndarray.newbyteorder, which cv_bridge calls
        ("32FC1", 10, 0, True, NUMPY2),
        ("mono8", 10, 0, True, False),  # one byte: byte order is irrelevant
    ],
)
def test_cv_bridge_problem(encoding: str, width: int, padding: int, big: bool, wrong: bool) -> None:
    pixel = {"rgb8": 3, "bgra8": 4, "32FC1": 4, "mono16": 2, "mono8": 1, "yuv422": 2}[encoding]
    problem = cv_bridge_problem(encoding, width * pixel + padding, big)
    assert (problem is not None) == wrong, problem
    if problem:
        assert encoding in problem


def test_our_decoder_handles_every_such_case() -> None:
    """What the node uses instead decodes all of them exactly."""
    rng = np.random.default_rng(4)
    cases = [
        (rng.integers(0, 255, (6, 10, 3), dtype=np.uint8), "rgb8", False, 2),
        (rng.integers(0, 255, (6, 10, 4), dtype=np.uint8), "bgra8", False, 2),
        (rng.uniform(-5, 40, (6, 10)).astype(np.float32), "32FC1", False, 2),
        (rng.integers(0, 65535, (6, 10), dtype=np.uint16), "mono16", False, 1),
        (rng.integers(0, 65535, (6, 10), dtype=np.uint16), "mono16", True, 0),
    ]
    for array, encoding, big, padding in cases:
        fields = encode_image(array, encoding, is_bigendian=big, row_padding=padding)
        assert cv_bridge_problem(encoding, fields.step, big) is not None or (big and not NUMPY2)
        np.testing.assert_array_equal(decode_msg(fields), array, err_msg=encoding)


@pytest.mark.skipif(not cv_bridge_available(), reason="cv_bridge not installed (ROS distribution only, not on PyPI)")
def test_node_decoder_with_real_cv_bridge_matches_ours_on_the_bad_cases() -> None:
    from sensor_msgs.msg import Image

    from sage_ros.image.encodings import fill_msg
    from sage_ros.node.processing import cv_bridge_decoder

    decode = cv_bridge_decoder()
    rng = np.random.default_rng(5)
    for array, encoding, big, padding in [
        (rng.integers(0, 255, (6, 10, 3), dtype=np.uint8), "rgb8", False, 2),
        (rng.integers(0, 255, (6, 10, 4), dtype=np.uint8), "bgra8", False, 2),
        (rng.uniform(-5, 40, (6, 10)).astype(np.float32), "32FC1", False, 2),
        (rng.integers(0, 65535, (6, 10), dtype=np.uint16), "mono16", False, 1),
        (rng.integers(0, 65535, (6, 10), dtype=np.uint16), "mono16", True, 0),
    ]:
        msg = fill_msg(Image(), encode_image(array, encoding, is_bigendian=big, row_padding=padding))
        np.testing.assert_array_equal(decode(msg), array, err_msg=encoding)
