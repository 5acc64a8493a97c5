"""The model files: the released files' pinned download (`weights`), every file derived from them built
once with provenance (`model_files`), the model variants (`model_variants`), the scale-adapted student's
files (`scale_student`) and the class tables (`classes`). Torch-free; the networks are in
`sage_ros.networks`, the torch-free graph builders in `sage_ros.graphs`."""
