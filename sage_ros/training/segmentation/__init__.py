"""Segmentation network training and evaluation (issue 6): boxes -> pseudo-masks, training, scoring.

    recipe          the shipped network's training recipe (defaults of NetTrainConfig and `train seg`)
    boxes           YOLO boxes and box -> pseudo-mask (numpy/OpenCV)
    data            samples: fused (frozen student, cached), visible and infrared inputs + targets
    net_data        the samples at the network's working resolution, thumbnails, training targets
    train_net       the training loop, calibration and scoring (torch)
    net_experiment  the recipe's cycles and seed ensemble, saving, eval-split scores and tables
    evaluate        connected-component boxes -> AP50, confusion matrix -> mIoU (numpy/OpenCV)
    baseline        the non-learned thermal rule
"""
