"""Semi-supervised learning: one module per method (``sonoseg.ssl.methods``) plus the pieces they share.

The shared pieces are plain functions on tensors (batch-first; probabilities and logits are
``(N, C, H, W)``) and never import Kedro:

* :mod:`sonoseg.ssl.losses`: supervised, consistency, contrastive and information losses;
* :mod:`sonoseg.ssl.ramps`: consistency ramp-up and learning-rate schedules;
* :mod:`sonoseg.ssl.ema`: exponential-moving-average (mean) teachers;
* :mod:`sonoseg.ssl.noise`: input and feature perturbations;
* :mod:`sonoseg.ssl.augment`: batch augmentations (weak, strong, mixup, CutMix boxes);
* :mod:`sonoseg.ssl.sampler`: the labelled + unlabelled index stream, resumable.

Importing this package imports nothing heavy; import the submodule you need.
"""
