"""ApproximateTimeSync behaviour that mutation testing found unchecked (docs/mutation.md):
defaults, exact counter arithmetic, error messages, extra callbacks, the stats dictionary."""

from __future__ import annotations

import pytest

from sage_ros.pairing.sync import ApproximateTimeSync, SyncStats, seconds_to_ns

MS = 1_000_000


def test_seconds_to_ns_is_exact_for_whole_and_fractional_seconds() -> None:
    assert seconds_to_ns(1.0) == 1_000_000_000
    assert seconds_to_ns(2.5) == 2_500_000_000
    assert seconds_to_ns(1e-9) == 1


def test_defaults_are_two_inputs_queue_10_slop_50_ms_no_offset() -> None:
    sync = ApproximateTimeSync()
    assert (sync.num_inputs, sync.queue_size, sync.slop_ns, sync.offsets_ns) == (2, 10, 50 * MS, [0, 0])
    # Queue 10: the 11th unmatched message evicts the oldest.
    for k in range(11):
        sync.add(0, k * 1000 * MS, k)
    assert sync.stats.evicted == [1, 0] and sync.pending() == [10, 0]
    # Slop 50 ms: 49 ms apart pairs; the callback list is empty, yet a pair is still formed and counted.
    sync.add(1, 10_049 * MS, "rgb")
    assert sync.stats.pairs == 1


def test_queue_of_one_is_allowed_and_keeps_only_the_newest() -> None:
    got: list[tuple] = []
    sync = ApproximateTimeSync(2, queue_size=1, slop=0.01, callback=got.append)
    sync.add(0, 100 * MS, "old")
    sync.add(0, 200 * MS, "new")
    assert sync.stats.evicted == [1, 0]
    sync.add(1, 100 * MS, "rgb100")
    assert got == []
    sync.add(1, 201 * MS, "rgb201")
    assert got == [("new", "rgb201")]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_inputs": 1}, r"num_inputs must be >= 2, got 1"),
        ({"queue_size": 0}, r"queue_size must be >= 1, got 0"),
        ({"slop": -0.5}, r"slop must be > 0 seconds, got -0.5"),
    ],
)
def test_bad_parameters_name_the_parameter_and_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ApproximateTimeSync(**kwargs)


def test_offsets_of_the_wrong_length_are_refused_with_the_counts() -> None:
    sync = ApproximateTimeSync(2)
    with pytest.raises(ValueError, match="expected 2 offsets, got 3"):
        sync.set_offsets_ns([0, 0, 0])
    assert sync.offsets_ns == [0, 0]


def test_an_index_past_the_last_input_is_refused_and_not_counted() -> None:
    sync = ApproximateTimeSync(3)
    with pytest.raises(IndexError, match=r"input index 3 out of range 0\.\.2"):
        sync.add(3, 0, "x")
    with pytest.raises(IndexError, match=r"input index -1 out of range 0\.\.2"):
        sync.add(-1, 0, "x")
    assert sync.stats.received == [0, 0, 0]


def test_counters_accumulate_rather_than_restart() -> None:
    sync = ApproximateTimeSync(2, queue_size=5, slop=0.01)
    for _ in range(3):
        sync.add(1, -1, "negative")  # rejected three times
    for _ in range(3):
        sync.add(0, 7 * MS, "same stamp")  # first queued, two duplicates
    sync.add(1, 900 * MS, "lonely")
    assert sync.flush() == 2
    sync.add(0, 1 * MS, "a")
    sync.add(0, 2 * MS, "b")
    assert sync.flush() == 2
    s = sync.stats
    assert s.rejected == [0, 3]
    assert s.duplicate == [2, 0]
    assert s.flushed == [3, 1]
    assert s.received == [5, 4]
    assert s.unpaired == 3 + 2 + 4


def test_every_registered_callback_gets_each_pair_in_order() -> None:
    first: list[tuple] = []
    second: list[tuple] = []
    sync = ApproximateTimeSync(2, slop=0.01, callback=first.append)
    sync.register_callback(second.append)
    sync.add(0, 5 * MS, "ir")
    sync.add(1, 6 * MS, "rgb")
    assert first == second == [("ir", "rgb")]


def test_reset_stats_zeroes_every_counter_but_keeps_the_queues() -> None:
    sync = ApproximateTimeSync(2, slop=0.01)
    sync.add(0, 5 * MS, "ir")
    sync.add(1, 6 * MS, "rgb")
    sync.add(0, 500 * MS, "waiting")
    sync.reset_stats()
    assert sync.stats == SyncStats([0, 0], [0, 0], [0, 0], [0, 0], [0, 0], 0)
    assert sync.pending() == [1, 0]
    sync.add(1, 501 * MS, "rgb2")
    assert sync.stats.pairs == 1 and sync.stats.received == [0, 1]


def test_stats_as_dict_has_every_counter_under_its_name() -> None:
    stats = SyncStats([5, 4], [1, 0], [2, 1], [0, 3], [0, 1], 2)
    d = stats.as_dict()
    assert d == {
        "received": [5, 4],
        "duplicate": [1, 0],
        "evicted": [2, 1],
        "flushed": [0, 3],
        "rejected": [0, 1],
        "pairs": 2,
        "unpaired": 1 + 3 + 3 + 1,
    }
    d["received"].append(9)  # a copy: the caller cannot change the counters
    assert stats.received == [5, 4]
