"""Evaluation: fusion and segmentation metrics (`metrics`, importable without rosbags), bag replay
(`runner`, needs the `eval` extra), its report and plots, and the mask-vs-boxes scoring of `seg eval`."""
