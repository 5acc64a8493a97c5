"""QoS of the node's topics: profiles from the parameters, `qos.reliability: auto`, and which
`qos_overrides.*` parameters the node lets rclpy declare."""

from __future__ import annotations

from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

QOS_CHECK_S = 1.0  # `qos.reliability: auto` re-reads the publishers of each input this often
# The policies a `qos_overrides.<topic>.<publisher|subscription>.<policy>` parameter may set (rclpy's defaults).
OVERRIDABLE = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY)


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def reliability_of(qos: QoSProfile) -> str:
    """The parameter value (`best_effort` or `reliable`) a profile's reliability corresponds to."""
    return "best_effort" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"


def match_publishers(reliabilities: list[Any]) -> tuple[str, str]:
    """`qos.reliability: auto`: the subscription reliability for these publishers, and why.

    As `ros2 topic echo` and rosbag2 decide: RELIABLE when every publisher is RELIABLE (no fragment
    of a large frame is lost), else BEST_EFFORT (the only kind a BEST_EFFORT publisher serves). With
    no publisher yet BEST_EFFORT, which matches whatever appears; the periodic check then adapts.
    """
    if not reliabilities:
        return "best_effort", "no publisher yet"
    best = sum(1 for r in reliabilities if r != ReliabilityPolicy.RELIABLE)
    n = len(reliabilities)
    if best == 0:
        return "reliable", f"all {n} publisher(s) RELIABLE"
    return "best_effort", f"{best} of {n} publisher(s) BEST_EFFORT"


def describe_qos(qos: QoSProfile) -> str:
    rel = "BEST_EFFORT" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "RELIABLE"
    return f"{rel} depth {qos.depth}"


def _given_overrides(node: Any) -> dict[str, Any]:
    # The parameters given at start (params file, `-p`, launch): rclpy keeps them in this dict.
    return getattr(node, "_parameter_overrides", None) or {}


def user_overrides(node: Any, topic: str, entity: str) -> QoSOverridingOptions | None:
    """Overriding options naming only the policies the user set `qos_overrides.<topic>.<entity>.*` for.

    Why not every policy (`QoSOverridingOptions.with_default_policies()`): rclpy declares one READ-ONLY
    parameter per listed policy, valued from the profile at the entity's first creation, and applies
    that parameter at every later creation. A policy listed without a user override thus pinned the
    first activation's `qos.depth`, `output_qos.*` or explicit `qos.reliability`: changed before a
    later configure, they were silently ignored. A policy the user did override is declared from the
    user's value and applied at every creation, as ROS intends. `topic`: the resolved topic name.
    """
    given = _given_overrides(node)
    prefix = f"qos_overrides.{topic}.{entity}."
    kinds = [kind for kind in OVERRIDABLE if prefix + kind.name.lower() in given]
    return QoSOverridingOptions(kinds) if kinds else None


def reliability_overridden(node: Any, topic: str) -> bool:
    """Whether the user set `qos_overrides.<topic>.subscription.reliability`: `auto` must not fight it."""
    return f"qos_overrides.{topic}.subscription.reliability" in _given_overrides(node)
