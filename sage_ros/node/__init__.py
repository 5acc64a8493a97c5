"""The ROS 2 fusion node (`sage_fusion`) and the pieces it is built from.

ROS-free: `handoff` (newest-pair slot), `stats` (rates, latency, drops, health), `processing` (one pair
in, fused frame out), `settings` (parameters, defaults, validation), `throttle` (problem logging),
`topics`. ROS: `run` (the `fusion_node` entry point: signals, spin, shutdown), `fusion_node` (the
lifecycle node), `inputs` (subscriptions, auto QoS, DDS loss), `outputs` (publishers), `qos`,
`synchroniser` and `mf_sync` (pairing), `worker` (inference thread), `diagnostics`, `dds_profile`.
Driving the node from outside: `sage_ros/cli/_live_demo.py` (extended for tests in `test/harness.py`).
"""
