"""Segmentation head training and evaluation (issue 6): boxes -> pseudo-masks, training, scoring.

    recipe      the shipped network's training recipe (defaults of NetTrainConfig and `seg train`)
    boxes       YOLO boxes and box -> pseudo-mask (numpy/OpenCV)
    data        samples: fused (frozen student, cached), visible and infrared inputs + targets
    train       the training loop (torch)
    evaluate    connected-component boxes -> AP50, confusion matrix -> mIoU (numpy/OpenCV)
    experiment  fused vs visible vs infrared heads, scored on the MSRS eval split
"""
