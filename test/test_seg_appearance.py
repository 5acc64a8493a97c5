"""Camera-appearance augmentation of the segmentation network's training (train_net, appearance.py)."""

import numpy as np

from sage_ros.training.segmentation.net_data import LOW_HW, LowFrame
from sage_ros.training.segmentation.train_net import NetTrainConfig, _augment, config_json


def _frame() -> LowFrame:
    rng = np.random.default_rng(1)
    h, w = LOW_HW
    inputs = {"fused": rng.random((h, w), np.float32), "infrared": rng.random((h, w), np.float32) * 0.5}
    return LowFrame("f", "day", "msrs", inputs, np.array([[2, 0.2, 0.3, 0.35, 0.8]], np.float32))


def test_appearance_changes_the_image_only_and_stays_in_range():
    frame = _frame()
    plain = _augment(frame, NetTrainConfig(), np.random.default_rng(7))
    config = NetTrainConfig(ir_tone=1.0, ir_equalize=1.0, ir_degrade=1.0, fused_tone=1.0)
    changed = _augment(frame, config, np.random.default_rng(7))
    assert changed[0].shape == plain[0].shape and changed[0].dtype == np.float32
    assert 0.0 <= changed[0].min() and changed[0].max() <= 1.0
    assert not np.allclose(changed[0][1], plain[0][1])  # the IR got another camera's look
    assert not np.allclose(changed[0][0], plain[0][0])  # and the fused Y its own milder curve
    np.testing.assert_array_equal(changed[1], plain[1])  # the same zoom and flip: the same target


def test_without_appearance_the_recipe_is_unchanged():
    frame = _frame()
    a = _augment(frame, NetTrainConfig(), np.random.default_rng(3))
    b = _augment(frame, NetTrainConfig(ir_gamma=(0.5, 2.0), ir_equalize=0.9), np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])  # no extra random draws while the shares are 0
    recorded = config_json(NetTrainConfig())
    assert "ir_tone" not in recorded and "fused_tone" not in recorded  # sidecars record what they did before
    assert config_json(NetTrainConfig(ir_tone=0.8))["ir_tone"] == 0.8
