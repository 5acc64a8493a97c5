"""Segmentation network training (`sage-ros train seg`); masks are scored by `sage-ros seg eval` (sage_ros.evaluation).

    recipe        the shipped network's training recipe (defaults of NetTrainConfig and `train seg`)
    data          frames at the network's working resolution (fused Y cached), box targets
    train_net     the training loop, augmentation, calibration and scoring (torch)
    train_recipe  the recipe's cycles and seed ensemble, resuming and saving
"""
