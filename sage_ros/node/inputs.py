"""The node's input subscriptions of one activation: thermal and RGB images, the RGB camera_info.

Owns their QoS (`qos.reliability: auto` follows the publishers, re-checked every QOS_CHECK_S) and makes
the two silent failures of DDS visible: samples the middleware reports lost or refuses for mismatched
QoS, and frames lost in transport estimated from gaps in each publisher's sequence numbers.
All methods run in the executor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import CameraInfo, Image

from sage_ros.node.qos import (
    QOS_CHECK_S,
    describe_qos,
    match_publishers,
    qos_profile,
    reliability_of,
    reliability_overridden,
    user_overrides,
)
from sage_ros.node.stats import INPUTS, NodeStats
from sage_ros.node.topics import TOPICS

INPUT_KEYS = (*INPUTS, "rgb_info")
MAX_TRACKED_PUBLISHERS = 64  # per input, for sequence-gap loss estimates (restarted drivers get new ids)


class InputSubscriptions:
    """Create with the node and its settings; `open()` at activate, `close()` at deactivate.

    `on_image(index, msg, info)` gets images (index into INPUTS), `on_info(msg)` camera_info; `problem(key,
    text, error=False)` logs a (throttled) problem.
    """

    def __init__(
        self,
        node: Any,
        settings: Any,
        on_image: Callable[[int, Any, Any], None],
        on_info: Callable[[Any], None],
        stats: NodeStats,
        problem: Callable[..., None],
    ) -> None:
        self._node = node
        self._settings = settings
        self._on_image = on_image
        self._on_info = on_info
        self._stats = stats
        self._problem = problem
        self._subs: dict[str, Any] = {}
        self._auto: dict[str, bool] = {}  # input key -> reliability follows the publishers
        self._last_seq: dict[str, dict[bytes, int]] = {}  # input -> publisher gid -> last sequence number
        self._timer: Any = None

    def open(self) -> None:
        for key in INPUT_KEYS:
            self._subscribe(key, initial=True)
        if any(self._auto.values()):
            self._timer = self._node.create_timer(QOS_CHECK_S, self.check_publishers)

    def close(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        for sub in self._subs.values():
            self._node.destroy_subscription(sub)
        self._subs.clear()

    def topic(self, key: str) -> str:
        """The resolved topic of input `key` (its relative name once closed)."""
        sub = self._subs.get(key)
        return sub.topic_name if sub is not None else TOPICS[key]

    def diagnostic_values(self) -> dict[str, str]:
        values = {"queue_tracked_publishers": str(sum(len(v) for v in self._last_seq.values()))}
        for key in INPUT_KEYS:
            sub = self._subs.get(key)
            if sub is not None:
                values[f"qos_{key}"] = describe_qos(sub.qos_profile) + (" (auto)" if self._auto.get(key) else "")
        return values

    # --- QoS -------------------------------------------------------------------------------------
    def _subscribe(self, key: str, initial: bool = False, choice: tuple[str, str] | None = None) -> None:
        """(Re)create the subscription of input `key`. `choice`: (reliability, reason) from the auto check."""
        node, s = self._node, self._settings
        topic = node.resolve_topic_name(TOPICS[key])
        wanted, reason = s["qos.reliability"], ""
        auto = wanted == "auto" and not reliability_overridden(node, topic)
        if auto:
            wanted, reason = choice or match_publishers(
                [p.qos_profile.reliability for p in node.get_publishers_info_by_topic(topic)]
            )
        elif wanted == "auto":
            wanted = "reliable"  # replaced by the user's qos_overrides parameter
        self._auto[key] = auto
        qos = qos_profile(wanted, s["qos.depth"])
        # Only the user's own overrides: auto makes the subscription again with another reliability, and
        # every configure may change qos.* (see user_overrides).
        overrides = user_overrides(node, topic, "subscription")
        old = self._subs.pop(key, None)
        if old is not None:
            node.destroy_subscription(old)
        if key == "rgb_info":
            sub = node.create_subscription(CameraInfo, TOPICS[key], self._on_info, qos,
                                           qos_overriding_options=overrides)
        else:
            index = INPUTS.index(key)
            sub = node.create_subscription(
                Image, TOPICS[key], lambda msg, info, i=index: self._on_image(i, msg, info),
                qos, qos_overriding_options=overrides, event_callbacks=self._event_callbacks(key),
            )
            self._last_seq.pop(key, None)  # a new reader: sequence gaps start over
        self._subs[key] = sub
        if auto:
            note = f" (qos.reliability auto: {reason})"
        elif s["qos.reliability"] == "auto":
            note = " (qos_overrides parameter)"
        elif reliability_of(sub.qos_profile) == "best_effort":
            note = " (sensor-data profile, REP-2003: matches RELIABLE and BEST_EFFORT publishers)"
        else:
            note = " (a BEST_EFFORT publisher will deliver nothing to it)"
        what = "subscribed" if initial else "re-subscribed"
        tail = "" if initial else ": the publishers changed"
        node.get_logger().info(f"{what} {sub.topic_name} with QoS {describe_qos(sub.qos_profile)}{note}{tail}")

    def check_publishers(self) -> None:
        """Timer: follow the publishers of every auto input as drivers come and go."""
        for key in INPUT_KEYS:
            sub = self._subs.get(key)
            if sub is None or not self._auto.get(key):
                continue
            try:
                infos = self._node.get_publishers_info_by_topic(sub.topic_name)
            except Exception as exc:  # noqa: BLE001 - a graph query failing must not stop the executor
                self._problem("qos_graph", f"could not list the publishers of {sub.topic_name}: {exc!r}")
                continue
            wanted, reason = match_publishers([p.qos_profile.reliability for p in infos])
            if wanted != reliability_of(sub.qos_profile):
                self._subscribe(key, choice=(wanted, reason))

    # --- loss in DDS ----------------------------------------------------------------------------
    def _event_callbacks(self, name: str) -> SubscriptionEventCallbacks:
        def lost(info: Any) -> None:
            # Samples the middleware reports dropped before we saw them (e.g. history overwritten while
            # busy). Not every loss is reported (incomplete fragmented samples often are not): the
            # sequence-gap estimate (`dds_seq_gap_*`) catches those.
            self._stats.dds_loss(f"dds_lost_{name}", int(info.total_count_change))

        def incompatible(info: Any) -> None:
            self._stats.dds_loss(f"qos_incompatible_{name}", int(info.total_count_change))
            self._problem(
                f"qos_{name}",
                f"a publisher on {TOPICS[name]} has QoS incompatible with this subscription (policy id "
                f"{info.last_policy_kind}): it delivers nothing. A RELIABLE subscription gets nothing from "
                "a BEST_EFFORT publisher: set qos.reliability to best_effort",
                error=True,
            )

        return SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)

    def note_sequence(self, name: str, info: Any) -> None:
        """Estimate frames lost in DDS from gaps in each publisher's sequence numbers.

        Each DDS writer numbers its samples 1, 2, 3...; a jump from n to n+k means k-1 samples were
        written after one we got and never reached us (lost fragments, history overwritten). Only
        gaps between two received samples count: nothing before the first one, after the last one,
        or while this subscription did not exist (it restarts the estimate).
        """
        if not info:
            return
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        known = self._last_seq.setdefault(name, {})
        last = known.get(key)
        if last is not None and seq > last + 1:
            self._stats.dds_loss(f"dds_seq_gap_{name}", seq - last - 1)
        if last is None and len(known) >= MAX_TRACKED_PUBLISHERS:
            known.pop(next(iter(known)))  # the oldest publisher seen (a driver restarted long ago)
        known[key] = seq if last is None else max(last, seq)
