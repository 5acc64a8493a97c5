"""Offline training of SAGE students (SAGE_SPEC sections 3-5): teacher, losses, SAM priors, trainer.

Never imported by the runtime node or the inference backends: it needs torch and, for the semantic
loss and the mask cache, `segment-anything` (the `training` extra). Entry points:
`sage-ros train {student,fast,scale,seg} ...` (multi-GPU: `torchrun ... -m sage_ros train student fit ...`).
"""
