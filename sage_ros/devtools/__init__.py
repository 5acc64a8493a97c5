"""Drive the fusion node from outside, over real DDS: never imported by the node itself.

`harness`: the node in a child process (`NodeProcess`), a probe node publishing camera frames and
recording the outputs (`Probe`), host-only DDS settings and free domain ids, a test model export.
Used by the tests, the benchmarks and `sage-ros demo --live` (sage_ros/cli/_live_demo.py).
"""
