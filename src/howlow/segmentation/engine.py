"""One epoch of training, one evaluation, and the checkpoints that let a killed training resume
(in the shape of torchvision's references/segmentation).

A checkpoint holds everything the next epoch depends on: weights, optimizer and lr-scheduler state,
the global torch RNG (the random transforms draw from it) and the data loader's generator (the
shuffle), so a training resumed from it ends with the same weights, bit for bit, as one that never
stopped (same device and thread count).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import VOID, save_torch
from ..metrics import confusion

log = logging.getLogger(__name__)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: torch.utils.data.DataLoader,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    epoch: int,
) -> float:
    """Train over `data_loader` once, stepping the scheduler every batch; the mean batch loss (a batch
    without a labelled pixel counts as 0: a crop of a sparse map can miss every labelled pixel, and
    then there is nothing to learn from it)."""
    model.train()
    total = 0.0
    for image, target in data_loader:
        image, target = image.to(device), target.to(device)
        if (target != VOID).any():
            loss = criterion(model(image), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        lr_scheduler.step()
    return total / max(1, len(data_loader))


def evaluate(
    model: nn.Module, data_loader: torch.utils.data.DataLoader, device: torch.device, num_classes: int
) -> np.ndarray:
    """The (num_classes, num_classes) confusion matrix (rows = truth, columns = prediction) of the
    model's argmax over `data_loader`; void (255) target pixels are ignored."""
    model.eval()
    cm = np.zeros((num_classes, num_classes), np.int64)
    with torch.inference_mode():
        for image, target in data_loader:
            pred = model(image.to(device)).argmax(1).cpu().numpy()
            cm += confusion(pred, target.numpy(), num_classes)
    return cm


def save_checkpoint(
    path: Path,
    *,
    fingerprint: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    epoch: int,
    history: list[dict],
    epoch_seconds: list[float],
) -> None:
    """Written atomically: a kill never leaves half a checkpoint. `epoch` = epochs done."""
    save_torch(
        path,
        {
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_loader": generator.get_state(),
            "history": history,
            "epoch_seconds": epoch_seconds,
        },
    )


def resume(
    path: Path,
    fingerprint: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> dict | None:
    """Restore model, optimizer, scheduler and RNGs from the checkpoint at `path` when it was made
    for the same inputs (`fingerprint`); returns it (epoch, history, epoch_seconds), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a checkpoint is only a cache: start over rather than fail
        log.warning("%s: unreadable checkpoint (%s); training from the start", path, exc)
        return None
    if ckpt.get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint of other params, images or code; training from the start", path)
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
    torch.set_rng_state(ckpt["rng_torch"])
    generator.set_state(ckpt["rng_loader"])
    return ckpt
