"""Evaluation metrics of thesis §5.4, one module per metric.

`image_metrics` (SSIM, MSE), `acd` (Average Content Distance), `fer` (CAS-M with the FER-2013
mini-Xception). Import the submodules directly; this package imports nothing so that loading
one metric does not pull in the others.
"""
