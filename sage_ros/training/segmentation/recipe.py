"""The shipped segmentation network's training recipe, in one place.

`NetTrainConfig` and `sage-ros train seg` both take their defaults from here, so the documented rebuild
command (docs/model_card.md) cannot drift from the library. Torch-free: the CLI reads it while building
its parser.
"""

WIDTHS = (16, 32, 64, 96)
STEPS = 8000
BATCH = 8
LR = 3e-3
# Background lines between touching boxes of one class (pixels at 1/4 resolution) and their loss weight.
SEPARATION = 1.0
SEPARATION_WEIGHT = 5.0
# The shipped file was trained with bf16 autocast (AVX-512 BF16 CPU); the library default stays fp32,
# which any CPU runs at full speed.
PRECISION = "bf16"
# Warm restart after the first cycle, from its calibrated weights.
RESTART_STEPS = 2000
RESTART_LR = 1.5e-3
# Then a short fine-tuning cycle from the restart's calibrated weights, with background lines in the gaps
# between facing boxes of one class (pixels at 1/4 resolution).
FINETUNE_STEPS = 1000
FINETUNE_LR = 1e-3
FINETUNE_GAP_LINES = 1.5
# The shipped network is the average of the logits of this recipe's networks for these seeds, calibrated
# again on the train split (docs/segmentation.md): one network alone over-fits and varies by seed.
SHIPPED_SEEDS = (0, 1, 2, 3, 4)
# Augmentation: random zoom range; the camera-appearance options (`train seg --ir-tone ...`, off in the
# shipped recipe: docs/segmentation.md, "Other cameras") draw IR gammas in IR_GAMMA and equalise with
# probability IR_EQUALIZE when a tone curve is applied.
ZOOM = (0.75, 1.33)
IR_GAMMA = (0.4, 2.5)
IR_EQUALIZE = 0.2
