"""ApproximateTimeSync: message_filters semantics, drop counters, offsets, thread safety."""

from __future__ import annotations

import importlib.util
import random
import threading

import pytest

from sage_ros.pairing.sync import ApproximateTimeSync, seconds_to_ns

MS = 1_000_000


def make(slop=0.02, queue_size=10, offsets=None):
    out: list[tuple] = []
    sync = ApproximateTimeSync(2, queue_size=queue_size, slop=slop, callback=out.append, offsets_ns=offsets)
    return sync, out


def test_pairs_jittered_streams_exactly_once_and_never_across_slop():
    rng = random.Random(3)
    sync, out = make(slop=0.02)
    period = 100 * MS  # 10 Hz; jitter well inside the 20 ms slop, pairs 100 ms apart
    events = []
    for k in range(50):
        base = 1_700_000_000 * 10**9 + k * period
        events.append((0, base + rng.randint(-8 * MS, 8 * MS), ("ir", k)))
        events.append((1, base + rng.randint(-2 * MS, 2 * MS), ("rgb", k)))
    # Arrival order shuffled locally (network reordering within a couple of frames).
    events.sort(key=lambda e: e[1] + rng.randint(-150 * MS, 150 * MS))
    for index, stamp, msg in events:
        sync.add(index, stamp, msg)
    assert len(out) == 50
    assert sorted(p[1][1] for p in out) == list(range(50))  # every true pair once
    assert all(ir[1] == rgb[1] for ir, rgb in out)  # never crossed
    stats = sync.stats
    assert stats.pairs == 50 and stats.unpaired == 0 and sync.pending() == [0, 0]


def test_no_pair_at_or_beyond_slop():
    sync, out = make(slop=0.01)
    sync.add(0, 1000 * MS, "a")
    sync.add(1, 1010 * MS, "b")  # spread == slop: message_filters requires strictly less
    assert out == []
    sync.add(1, 1009 * MS, "c")
    assert out == [("a", "c")]
    assert sync.pending() == [0, 1]  # "b" stays queued, as in message_filters


def test_nearest_partner_is_chosen_and_older_ones_stay_queued():
    sync, out = make(slop=0.05)
    sync.add(0, 100 * MS, "t100")
    sync.add(0, 130 * MS, "t130")
    sync.add(1, 125 * MS, "r125")
    assert out == [("t130", "r125")]
    assert sync.pending() == [1, 0]


def test_duplicate_stamp_replaces_and_is_counted():
    sync, out = make()
    sync.add(0, 5 * MS, "first")
    sync.add(0, 5 * MS, "second")
    sync.add(1, 5 * MS, "rgb")
    assert out == [("second", "rgb")]
    assert sync.stats.duplicate == [1, 0]
    assert sync.stats.unpaired == 1


def test_full_queue_evicts_oldest_and_counts_it():
    sync, out = make(queue_size=3)
    for k in range(5):
        sync.add(0, k * 100 * MS, k)
    assert sync.stats.evicted == [2, 0]
    assert sync.pending() == [3, 0]
    # The evicted stamps are gone: an RGB frame at t=0 finds nothing.
    sync.add(1, 0, "late")
    assert out == []
    # A new message older than everything in a full queue is evicted at once, never matched.
    sync.add(1, 300 * MS, "r300")
    assert out == [(3, "r300")]
    for k in (10, 11, 12):
        sync.add(1, k * 100 * MS, k)
    sync.add(1, 50 * MS, "too_old")
    assert sync.stats.evicted[1] == 2


def test_offset_is_applied_by_the_object_and_messages_come_back_untouched():
    # Thermal driver stamps 80 ms late; offset -80 ms pairs it with the RGB frame of the same instant.
    sync, out = make(slop=0.02, offsets=[-80 * MS, 0])
    sync.add(0, 1080 * MS, "ir@1.08")
    sync.add(1, 1000 * MS, "rgb@1.00")
    assert out == [("ir@1.08", "rgb@1.00")]
    sync2, out2 = make(slop=0.02)
    sync2.add(0, 1080 * MS, "ir")
    sync2.add(1, 1000 * MS, "rgb")
    assert out2 == []


def test_flush_counts_leftovers_and_negative_stamps_are_rejected():
    sync, out = make()
    sync.add(0, 1 * MS, "a")
    sync.add(1, 500 * MS, "b")
    sync.add(1, -5, "bad")
    assert sync.flush() == 2
    s = sync.stats
    assert s.flushed == [1, 1] and s.rejected == [0, 1] and s.received == [1, 2]
    assert s.unpaired == 3 and sync.pending() == [0, 0]
    with pytest.raises(IndexError):
        sync.add(2, 0, "x")


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, queue_size=0, slop=0.1)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, queue_size=5, slop=0.0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(1)
    assert seconds_to_ns(0.0333) == 33_300_000


def test_three_inputs_need_all_within_slop():
    out = []
    sync = ApproximateTimeSync(3, queue_size=5, slop=0.01, callback=out.append)
    sync.add(0, 100 * MS, "a")
    sync.add(1, 105 * MS, "b")
    sync.add(2, 112 * MS, "c")  # 12 ms spread to "a": no
    assert out == []
    sync.add(0, 108 * MS, "a2")
    assert out == [("a2", "b", "c")]


def test_thread_safety_counts_add_up():
    sync, out = make(slop=0.005, queue_size=5)
    lock = threading.Lock()
    n = 2000

    def feed(index: int, jitter_seed: int) -> None:
        rng = random.Random(jitter_seed)
        for k in range(n):
            # Some frames skipped on each side so evictions happen too.
            if rng.random() < 0.1:
                continue
            sync.add(index, k * 10 * MS + rng.randint(0, MS), (index, k))

    threads = [threading.Thread(target=feed, args=(i, i)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    with lock:
        s = sync.stats
    assert s.pairs == len(out)
    assert all(a[1] == b[1] for a, b in out)  # 10 ms apart, slop 5 ms: only true pairs
    for i in (0, 1):
        assert s.received[i] == s.pairs + s.evicted[i] + s.duplicate[i] + sync.pending()[i]


@pytest.mark.skipif(
    importlib.util.find_spec("message_filters") is None,
    reason="message_filters is not installed here (it comes from a ROS distribution, not PyPI)",
)
def test_same_pairs_as_message_filters():
    import message_filters
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    class Msg:
        def __init__(self, ns: int, tag: str) -> None:
            self.header = Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9))
            self.tag = tag

    class Src(message_filters.SimpleFilter):
        pass

    rng = random.Random(7)
    events = []
    for k in range(40):
        base = 10**9 + k * 50 * MS
        events.append((0, base + rng.randint(-15 * MS, 15 * MS), f"ir{k}"))
        events.append((1, base + rng.randint(-15 * MS, 15 * MS), f"rgb{k}"))
    rng.shuffle(events)
    srcs = [Src(), Src()]
    theirs: list[tuple] = []
    mf = message_filters.ApproximateTimeSynchronizer(srcs, 6, 0.02)
    mf.registerCallback(lambda a, b: theirs.append((a.tag, b.tag)))
    ours_sync, ours = make(slop=0.02, queue_size=6)
    for index, stamp, tag in events:
        srcs[index].signalMessage(Msg(stamp, tag))
        ours_sync.add(index, stamp, tag)
    assert ours == theirs
