"""The ROS 2 fusion node (`sage_fusion`) and the pieces it is built from.

ROS-free: `handoff` (newest-pair slot), `stats` (rates, latency, drops, health), `processing` (one pair
in, fused frame out), `settings` (parameters, defaults, validation). ROS: `fusion_node` (the node),
`mf_sync` (message_filters adapter), `harness` (drive the node over DDS from another process),
`live_demo` (`run_live_demo`, used by `sage-ros demo --live`).
"""
