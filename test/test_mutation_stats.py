"""The node's accounting (sage_ros.node.stats) checked value by value, as mutation testing asked
(docs/mutation.md): rates by hand, percentiles, every counter and the exact /diagnostics strings."""

from __future__ import annotations

import math

import pytest

from sage_ros.node.stats import ERROR, OK, WARN, Health, NodeStats, RateMeter, percentiles_ms


# --- RateMeter -----------------------------------------------------------------------------------
def test_rate_counts_intervals_and_decays_with_the_silence_after_the_last_event() -> None:
    meter = RateMeter(window_s=5.0)
    assert meter.rate(0.0) == 0.0 and meter.total == 0 and meter.last is None
    meter.tick(0.0)
    assert meter.rate(0.0) == 0.0  # one event: no interval yet
    meter.tick(1.0)
    meter.tick(2.0)
    assert (meter.total, meter.last) == (3, 2.0)
    assert meter.rate(2.0) == pytest.approx(2 / 2.0)  # 2 intervals over 2 s
    assert meter.rate(4.0) == pytest.approx(2 / 4.0)  # 2 s of silence stretch the span


def test_the_window_keeps_events_exactly_window_s_old_and_drops_older() -> None:
    meter = RateMeter(window_s=5.0)
    meter.tick(0.0)
    meter.tick(5.0)
    assert meter.rate(5.0) == pytest.approx(1 / 5.0)  # the event at 0 is exactly 5 s old: kept
    assert meter.rate(5.5) == 0.0  # now older than 5 s: dropped, one event left
    assert meter.total == 2  # the total never forgets


def test_default_rate_window_is_five_seconds() -> None:
    meter = RateMeter()
    for t in (0.0, 1.0, 6.0):
        meter.tick(t)
    assert meter.rate(6.0) == pytest.approx(1 / 5.0)  # 0 fell out, 1 and 6 remain


# --- percentiles ---------------------------------------------------------------------------------
def test_percentiles_by_linear_interpolation() -> None:
    got = percentiles_ms([float(v) for v in range(100, 0, -1)])  # 1..100, unsorted
    # p50 between the 50th and 51st values; p95 at rank 0.95 * 99 = 94.05 -> 95 + 0.05.
    assert got == pytest.approx({"p50": 50.5, "p95": 95.05, "max": 100.0})
    assert percentiles_ms([7.0]) == {"p50": 7.0, "p95": 7.0, "max": 7.0}


def test_no_samples_gives_nan_for_every_statistic() -> None:
    got = percentiles_ms([])
    assert set(got) == {"p50", "p95", "max"} and all(math.isnan(v) for v in got.values())


# --- NodeStats counters --------------------------------------------------------------------------
def test_defaults() -> None:
    stats = NodeStats()
    assert stats.stale_timeout == 2.0
    assert stats.latency_ms.maxlen == stats.processing_ms.maxlen == stats.inference_ms.maxlen == 200
    assert set(stats.inputs) == {"thermal", "rgb"}
    assert all(m.window_s == 5.0 for m in (*stats.inputs.values(), stats.pairs, stats.outputs))


def test_drops_accumulate_ignore_non_positive_counts_and_remember_the_last_error() -> None:
    stats = NodeStats()
    stats.drop("thermal_malformed")
    stats.drop("thermal_malformed", 2, error="step too small")
    stats.drop("rgb_queue", 0, error="ignored")
    stats.drop("rgb_queue", -3)
    assert stats.drops == {"thermal_malformed": 3}
    assert stats.last_error == "step too small"
    stats.drop("rgb_queue", 1)  # no error text: the last one stays
    assert stats.last_error == "step too small"


def test_dds_losses_are_kept_apart_and_only_positive_counts_count() -> None:
    stats = NodeStats()
    stats.dds_loss("thermal_lost", 4)
    stats.dds_loss("thermal_lost", 1)
    stats.dds_loss("rgb_lost", 0)
    assert stats.dds == {"thermal_lost": 5} and not stats.drops


def test_mirrored_totals_replace_rather_than_add() -> None:
    stats = NodeStats()
    stats.set_drop_total("sync_unpaired", 4)
    stats.set_drop_total("sync_unpaired", 6)
    assert stats.drops["sync_unpaired"] == 6


def test_model_failure_counts_and_records_the_error() -> None:
    stats = NodeStats()
    stats.model_failed(3.0, "CUDA out of memory")
    stats.model_failed(4.0, "shape mismatch")
    assert stats.drops["failed_model"] == 2
    assert (stats.model_error, stats.model_error_at, stats.last_error) == ("shape mismatch", 4.0, "shape mismatch")


def test_configure_resizes_windows_keeping_the_newest_samples_and_totals() -> None:
    stats = NodeStats(latency_window=10, stale_timeout=2.0)
    for k in range(5):
        stats.output_published(float(k), latency_ms=k, processing_ms=10 + k, inference_ms=20 + k)
    stats.drop("x", 2)
    stats.configure(latency_window=3, stale_timeout=7.5)
    assert stats.stale_timeout == 7.5
    assert list(stats.latency_ms) == [2, 3, 4]
    assert list(stats.processing_ms) == [12, 13, 14]
    assert list(stats.inference_ms) == [22, 23, 24]
    assert stats.latency_ms.maxlen == 3
    assert stats.outputs.total == 5 and stats.drops["x"] == 2


def test_queue_depths_report_the_largest_container() -> None:
    stats = NodeStats(latency_window=4)
    for t in (0.0, 0.1, 0.2):
        stats.input_received("rgb", t)
    stats.pair_formed(0.2)
    for _ in range(6):
        stats.output_published(0.3, 1.0, 1.0, 1.0)
    stats.drop("a")
    stats.drop("b")
    stats.dds_loss("c", 1)
    assert stats.queue_depths() == {"rate_samples": 6, "latency_samples": 4, "drop_keys": 3}


# --- health --------------------------------------------------------------------------------------
def test_health_before_activation_is_inactive() -> None:
    assert NodeStats().health(100.0) == Health(OK, "inactive")


def test_silence_is_measured_from_activation_then_from_the_last_frame() -> None:
    stats = NodeStats(stale_timeout=2.0)
    stats.input_received("thermal", 1.0)  # before activation: forgotten by activated()
    stats.activated(10.0)
    assert stats.health(12.0).level == OK  # exactly the timeout: not yet stale
    h = stats.health(12.5)
    assert h.level == WARN and h.message == "thermal silent for 2.5 s; rgb silent for 2.5 s"
    stats.input_received("thermal", 12.5)
    stats.input_received("rgb", 12.5)
    fusing = stats.health(13.0)
    assert (fusing.level, fusing.message) == (OK, "fusing")


def test_a_model_error_outranks_silence_until_a_later_output() -> None:
    stats = NodeStats(stale_timeout=1.0)
    stats.activated(0.0)
    stats.output_published(5.0, 1.0, 1.0, 1.0)
    stats.model_failed(5.5, "boom")  # after the last output
    h = stats.health(50.0)  # inputs silent for 50 s too: the error is what is reported
    assert (h.level, h.message) == (ERROR, "model failed: boom")
    stats.output_published(6.0, 1.0, 1.0, 1.0)
    assert stats.health(6.0).level != ERROR


# --- /diagnostics values -------------------------------------------------------------------------
def test_values_are_the_exact_diagnostics_strings() -> None:
    stats = NodeStats()
    stats.activated(0.0)
    for t in (0.0, 0.5, 1.0):
        stats.input_received("thermal", t)
    stats.input_received("rgb", 0.5)
    stats.input_received("rgb", 1.0)
    stats.pair_formed(0.5)
    stats.pair_formed(1.0)
    stats.output_published(1.0, latency_ms=40.0, processing_ms=30.0, inference_ms=20.25)
    stats.published(["fused", "fused", "overlay"])
    stats.drop("thermal_malformed", 2, error="bad step")
    stats.drop("failed_model", 1)
    stats.dds_loss("rgb_lost", 3)
    assert stats.values(1.0) == {
        "thermal_rate_hz": "2.00",  # 2 intervals in 1 s
        "rgb_rate_hz": "2.00",  # 1 interval in 0.5 s
        "thermal_received": "3",
        "rgb_received": "2",
        "pair_rate_hz": "2.00",
        "pairs": "2",
        "output_rate_hz": "0.00",
        "outputs": "1",
        "latency_p50_ms": "40.0",
        "latency_p95_ms": "40.0",
        "latency_max_ms": "40.0",
        "processing_p50_ms": "30.0",
        "processing_p95_ms": "30.0",
        "processing_max_ms": "30.0",
        "inference_p50_ms": "20.2",  # 20.25 to one decimal (round half to even)
        "inference_p95_ms": "20.2",
        "inference_max_ms": "20.2",
        "published_fused": "2",
        "published_overlay": "1",
        "drops_total": "3",
        "drop_failed_model": "1",
        "drop_thermal_malformed": "2",
        "drop_rgb_lost": "3",
        "last_error": "bad step",
    }


def test_values_without_samples_or_errors() -> None:
    values = NodeStats().values(0.0)
    assert values["latency_p50_ms"] == "nan" and values["drops_total"] == "0"
    assert "last_error" not in values and not any(k.startswith(("drop_", "published_")) for k in values)
