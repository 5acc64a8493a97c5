"""The ROS 2 fusion node (`sage_fusion`) and the ROS-free pieces it is built from.

ROS-free: `handoff` (newest-pair slot), `stats` (rates, latency, drops), `processing` (one pair in,
fused frame out), `settings` (parameters, their defaults and validation). ROS: `fusion_node`, `live_demo`.
"""
