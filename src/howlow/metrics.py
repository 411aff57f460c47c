"""Segmentation metrics from a confusion matrix; void (255) pixels never count."""

from __future__ import annotations

import numpy as np

from .io import VOID


def confusion(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = ground truth, columns = prediction, over non-void pixels."""
    keep = gt != VOID
    idx = gt[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both ground truth and prediction."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0
