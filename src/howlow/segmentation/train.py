"""The data-set network's training: one network from scratch per label source, on the Oracle's images
(the label sources are described in howlow.segmentation.datasets).

`train_source` is the recipe: a seeded DataLoader over the training images with one source's targets,
Adam with a one-cycle schedule stepped per batch, `train_one_epoch` per epoch, the val split scored
every `train.eval_every` epochs and after the last, a checkpoint after every epoch.

Outputs in `out_dir` (default `models/`): `<source>.pt` (weights + what is needed to rebuild the
network), `<source>.json` (annotated pixels, loss per epoch, and `history`: one row per epoch with its
loss, lr and, where scored, val mIoU). No timings in them (they would differ on every run): the
training seconds, in total and after each epoch (the learning curve's x), are returned and written
to `timing` when given.

Checkpoint: `<source>.ckpt` beside them, rewritten after every epoch and removed once `<source>.pt`
and `<source>.json` are written. A training started with a checkpoint of the same fingerprint (train
params, source, training images and targets, this package's code) resumes from it and ends with
the same weights as an uninterrupted run; any other checkpoint is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..console import Progress
from ..data import Prepared
from ..io import VOID, save_torch, write_json
from ..layout import Layout
from ..metrics import iou_per_class, mean_iou, pixel_accuracy
from ..params import Params
from .datasets import (
    Annotation,
    SegmentationDataset,
    SourceData,
    annotated_pixels,
    augmentation,
    class_weights,
    crop_size,
    label_map,
    normalise,
    resample_nearest,
    source_data,
    val_dataset,
)
from .engine import evaluate, resume, save_checkpoint, train_one_epoch
from .models import build_model

__all__ = [
    "annotated_pixels",
    "augmentation",
    "checkpoint_path",
    "crop_size",
    "evaluate",
    "evaluate_source",
    "fingerprint",
    "label_map",
    "load_model",
    "normalise",
    "predict",
    "resample_nearest",
    "train_one_epoch",
    "train_source",
]

log = logging.getLogger(__name__)


def checkpoint_path(out_dir: Path, source: str) -> Path:
    return Path(out_dir) / f"{source}.ckpt"


def _code_digest() -> str:
    """This package's source: a checkpoint from other training code must not be continued."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def fingerprint(params: Params, source: str, data: SourceData, n_classes: int) -> str:
    """What a training's result depends on: train params, source, images, targets, code."""
    h = hashlib.sha256(
        json.dumps(
            {
                "train": params.train.model_dump(mode="json"),
                "source": source,
                "n_classes": n_classes,
                "ids": data.ids,
                "code": _code_digest(),
            },
            sort_keys=True,
        ).encode()
    )
    for image, target in zip(data.images, data.targets):
        h.update(np.ascontiguousarray(image).tobytes())
        h.update(np.ascontiguousarray(target).tobytes())
    return h.hexdigest()[:16]


def _scores(cm: np.ndarray) -> dict:
    return {"val_miou": mean_iou(cm), "val_pixel_accuracy": pixel_accuracy(cm)}


def train_source(
    params: Params,
    source: str,
    prepared: Prepared,
    ids: list[str],
    layout: Layout,
    out_dir: Path | None = None,
    annotations: dict[str, Annotation] | None = None,
    timing: Path | None = None,
) -> dict:
    """Train the data-set network on one label source (resuming from its checkpoint when there is
    a matching one); `out_dir` (default `layout.models`) gets `<source>.pt` and `<source>.json`.
    `annotations`: the clicks behind the budget (default: the pipeline's oracle stage). Returns
    `<source>.json`'s content with `seconds` and `epoch_seconds` added (also written to `timing`)."""
    out_dir = Path(out_dir or layout.models)
    t = params.train
    data = source_data(params, source, prepared, ids, layout, annotations)
    key = fingerprint(params, source, data, prepared.n_classes)
    device = torch.device(params.runtime.device)

    model = build_model(t.model, 3, prepared.n_classes, t.width, t.depth, torch.Generator().manual_seed(t.seed), t.norm)
    model.to(device)
    weights = class_weights(params, data.targets, prepared.n_classes)
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device), ignore_index=VOID)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    train_set = SegmentationDataset(
        data.images, data.targets, data.mean, data.std, augmentation(params, crop_size(params, prepared, ids))
    )
    order = torch.Generator().manual_seed(t.seed)  # the shuffle; reproducible and checkpointed
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=t.batch_size, shuffle=True, num_workers=0, generator=order
    )
    val_loader = torch.utils.data.DataLoader(val_dataset(prepared, data.mean, data.std), batch_size=1)
    lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=t.epochs * len(train_loader))
    torch.manual_seed(t.seed)  # torchvision's random transforms draw from the global generator

    ckpt_path = checkpoint_path(out_dir, source)
    for partial in out_dir.glob(f".{ckpt_path.name}.*.tmp"):  # a checkpoint being written when killed
        partial.unlink()
    ckpt = resume(ckpt_path, key, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, generator=order)
    start, history, epoch_seconds = (ckpt["epoch"], ckpt["history"], ckpt["epoch_seconds"]) if ckpt else (0, [], [])
    seconds = epoch_seconds[-1] if epoch_seconds else 0.0
    if ckpt:
        log.info("%s: resuming after epoch %d/%d from %s", source, start, t.epochs, ckpt_path)

    bar = Progress(log, f"train {source}", t.epochs, "epoch", initial=start)
    for epoch in range(start, t.epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        row = {
            "epoch": epoch + 1,
            "loss": train_one_epoch(model, criterion, optimizer, train_loader, lr_scheduler, device, epoch),
            "lr": lr,
            "val_miou": None,
            "val_pixel_accuracy": None,
        }
        seconds += time.perf_counter() - t0  # training time; the val scoring is not part of it
        epoch_seconds.append(round(seconds, 2))  # training time so far: the learning curve's x
        if (t.eval_every and (epoch + 1) % t.eval_every == 0) or epoch + 1 == t.epochs:
            row.update(_scores(evaluate(model, val_loader, device, prepared.n_classes)))
        history.append(row)
        save_checkpoint(
            ckpt_path,
            fingerprint=key,
            model=model,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            generator=order,
            epoch=epoch + 1,
            history=history,
            epoch_seconds=epoch_seconds,
        )
        val = "" if row["val_miou"] is None else f", val mIoU {row['val_miou']:.4f}"
        log.debug("%s: epoch %d/%d loss %.4f%s", source, epoch + 1, t.epochs, row["loss"], val)
        bar.update(f"loss {row['loss']:.4f}{val}")
    bar.close()

    losses = [r["loss"] for r in history]
    save_torch(
        out_dir / f"{source}.pt",
        {
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "model": t.model,
            "width": t.width,
            "depth": t.depth,
            "norm": t.norm,
            "n_classes": prepared.n_classes,
            "mean": data.mean,
            "std": data.std,
        },
    )
    info = {
        "source": source,
        "images": len(data.ids),
        "annotated_pixels": data.annotated,
        "total_pixels": data.total,
        "annotated_pct": 100.0 * data.annotated / data.total,
        "epochs": t.epochs,
        "final_loss": losses[-1],
        "loss": losses,
        "eval_every": t.eval_every,
        "history": history,
        "fingerprint": key,
    }
    write_json(out_dir / f"{source}.json", info)
    took = {"seconds": round(seconds, 2), "epoch_seconds": epoch_seconds}
    if timing is not None:
        write_json(timing, took)
    ckpt_path.unlink(missing_ok=True)
    return {**info, **took}


def load_model(path: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    ckpt = torch.load(path, weights_only=True)
    norm = ckpt.get("norm", "group")  # networks saved before train.norm existed are GroupNorm
    model = build_model(ckpt["model"], 3, ckpt["n_classes"], ckpt["width"], ckpt["depth"], torch.Generator(), norm)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["mean"], ckpt["std"]


def predict(model: torch.nn.Module, image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        x = normalise(torch.from_numpy(image).permute(2, 0, 1)[None], mean, std)
        return model(x)[0].argmax(0).numpy().astype(np.uint8)


def evaluate_source(prepared: Prepared, model_path: Path) -> dict:
    """Val-split mIoU, pixel accuracy and IoU per class name (None: class absent from truth and prediction)."""
    model, mean, std = load_model(model_path)
    loader = torch.utils.data.DataLoader(val_dataset(prepared, mean, std), batch_size=1)
    cm = evaluate(model, loader, torch.device("cpu"), prepared.n_classes)
    iou = iou_per_class(cm)
    return {
        "miou": mean_iou(cm),
        "pixel_accuracy": pixel_accuracy(cm),
        "per_class_iou": {
            c["name"]: (None if np.isnan(iou[c["id"]]) else float(iou[c["id"]])) for c in prepared.classes
        },
    }
