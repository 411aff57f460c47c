"""The data-set network's training: one network from scratch per label source, on the Oracle's images.

Label sources (all on the same training images, the ones the Oracle annotated, so the comparison is fair):
  full    the ground-truth label maps
  pseudo  the per-image networks' labels for every pixel (annotation cost: the revealed pixels)
  confident  pseudo-labels where the per-image network is at least `train.confidence` sure, else
          unlabelled (same cost as pseudo)
  sparse  only the revealed pixels; the loss ignores every other pixel
  random  as many pixels per image as were revealed, chosen uniformly at random among valid pixels

Outputs: `models/<source>.pt` (weights + what is needed to rebuild the network) and
`models/<source>.json` (annotated pixels, loss per epoch, seconds).
"""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from ..data import Prepared
from ..io import VOID, read_csv, read_json, read_label, save_torch, write_json
from ..layout import Layout
from ..metrics import confusion, iou_per_class, mean_iou, pixel_accuracy
from ..params import Params
from .models import build_model


def resample_nearest(label: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (each output pixel takes the label at its centre)."""
    if label.shape == tuple(shape):
        return label
    rows = ((np.arange(shape[0]) + 0.5) * label.shape[0] / shape[0]).astype(np.int64)
    cols = ((np.arange(shape[1]) + 0.5) * label.shape[1] / shape[1]).astype(np.int64)
    return label[rows][:, cols]


def label_map(source: str, params: Params, prepared: Prepared, row: dict, layout: Layout) -> np.ndarray:
    """The training target of one image for a label source (void 255 = no label). The Oracle may
    have annotated the image at another resolution (`study.oracle_scale`): its labels are resampled
    to the training image (nearest; a revealed pixel labels the training pixel it falls in)."""
    truth = prepared.label(row)
    oracle_dir, pseudo_dir = layout.oracle, layout.pseudo
    if source == "full":
        return truth
    if source == "pseudo":
        return resample_nearest(read_label(Path(pseudo_dir) / f"{row['id']}.png"), truth.shape)
    if source == "confident":
        target = resample_nearest(read_label(Path(pseudo_dir) / f"{row['id']}.png"), truth.shape).copy()
        conf = resample_nearest(read_label(Path(pseudo_dir) / f"{row['id']}_conf.png"), truth.shape)  # x 255
        target[conf < round(params.train.confidence * 255)] = VOID
        return target
    result = read_json(Path(oracle_dir) / f"{row['id']}.json")
    revealed = np.array(result["revealed"], np.int64).reshape(-1, 4)
    target = np.full_like(truth, VOID)
    if source == "sparse":
        h, w = result["summary"]["height"], result["summary"]["width"]
        ys = (revealed[:, 0] * truth.shape[0]) // h
        xs = (revealed[:, 1] * truth.shape[1]) // w
        target[ys, xs] = revealed[:, 2]
        return target
    if source == "random":
        rng = np.random.default_rng([params.train.seed, zlib.crc32(row["id"].encode())])
        ys, xs = np.nonzero(truth != VOID)
        pick = rng.choice(len(ys), size=min(len(revealed), len(ys)), replace=False)
        target[ys[pick], xs[pick]] = truth[ys[pick], xs[pick]]
        return target
    raise ValueError(f"unknown label source {source!r}")


def annotated_pixels(source: str, target: np.ndarray, truth: np.ndarray, n_revealed: int) -> int:
    """What the labels of a source cost a human: every valid pixel for `full`, the Oracle's
    revealed pixels for `pseudo`, `confident` and `sparse` (their labels come from those), the
    labelled pixels for `random`."""
    if source == "full":
        return int((truth != VOID).sum())
    if source in ("pseudo", "confident", "sparse"):
        return n_revealed
    return int((target != VOID).sum())


def crop_size(params: Params, prepared: Prepared, ids: list[str]) -> tuple[int, int]:
    """`train.crop`, or the smallest training image rounded down to a multiple of 8 (U-Net pooling)."""
    if params.train.crop:
        return params.train.crop[0], params.train.crop[1]
    rows = [r for r in prepared.split("train") if r["id"] in ids]
    h = min(int(r["height"]) for r in rows)
    w = min(int(r["width"]) for r in rows)
    return max(8, h // 8 * 8), max(8, w // 8 * 8)


def augmentation(params: Params, size: tuple[int, int]) -> v2.Transform:
    # image and mask get the same geometry; the mask is resampled nearest and padded with void
    if params.train.augment:
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
                           v2.RandomHorizontalFlip()])
    return v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: VOID})


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def train_source(params: Params, source: str, prepared: Prepared, ids: list[str], layout: Layout,
                 out_dir: Path | None = None) -> dict:
    """Train the data-set network on one label source; `out_dir` (default `layout.models`) gets
    `<source>.pt` and `<source>.json`."""
    out_dir = Path(out_dir or layout.models)
    t = params.train
    rows = [r for r in prepared.split("train") if r["id"] in ids]
    summary = {r["id"]: r for r in read_csv(layout.oracle / "summary.csv")}
    images, targets, annotated, total = [], [], 0, 0
    for row in rows:
        target = label_map(source, params, prepared, row, layout)
        truth = prepared.label(row)
        annotated += annotated_pixels(source, target, truth, int(summary[row["id"]]["revealed"]))
        # a share of the image at the resolution it was annotated at (the Oracle's, for the sparse sources)
        total += truth.size if source == "full" else int(summary[row["id"]]["pixels"])
        images.append(tv_tensors.Image(torch.from_numpy(prepared.image(row)).permute(2, 0, 1)))
        targets.append(tv_tensors.Mask(torch.from_numpy(target.astype(np.int64))))
    stacked = torch.cat([im.reshape(3, -1) for im in images], 1).float() / 255.0
    mean, std = stacked.mean(1), stacked.std(1) + 1e-6

    gen = torch.Generator().manual_seed(t.seed)
    device = torch.device(params.runtime.device)
    model = build_model(t.model, 3, prepared.n_classes, t.width, t.depth, gen).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=t.lr)
    steps_per_epoch = -(-len(images) // t.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=t.lr, total_steps=t.epochs * steps_per_epoch)
    transform = augmentation(params, crop_size(params, prepared, ids))
    torch.manual_seed(t.seed)  # torchvision's random transforms draw from the global generator
    order_rng = np.random.default_rng(t.seed)

    t0, losses = time.perf_counter(), []
    model.train()
    # a progress bar on a terminal; a line every 10 % of the epochs in logs (DVC, Prefect, CI)
    bar = tqdm(total=t.epochs, desc=f"train {source}", unit="epoch", file=sys.stderr, disable=not sys.stderr.isatty())
    for epoch in range(t.epochs):
        order, epoch_loss = order_rng.permutation(len(images)), 0.0
        for b in range(steps_per_epoch):
            batch = [transform(images[i], targets[i]) for i in order[b * t.batch_size:(b + 1) * t.batch_size]]
            x = normalise(torch.stack([im for im, _ in batch]), mean, std).to(device)
            y = torch.stack([m for _, m in batch]).to(device)
            if (y != VOID).any():  # a crop of a sparse map can miss every labelled pixel
                loss = F.cross_entropy(model(x), y, ignore_index=VOID)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                epoch_loss += float(loss.detach())
            sched.step()
        losses.append(epoch_loss / steps_per_epoch)
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if bar.disable and ((epoch + 1) % max(1, t.epochs // 10) == 0 or epoch + 1 == t.epochs):
            print(f"[train {source}] epoch {epoch + 1}/{t.epochs} loss {losses[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    bar.close()
    seconds = time.perf_counter() - t0
    save_torch(Path(out_dir) / f"{source}.pt", {
        "state_dict": model.cpu().state_dict(), "model": t.model, "width": t.width, "depth": t.depth,
        "n_classes": prepared.n_classes, "mean": mean, "std": std})
    info = {"source": source, "images": len(rows), "annotated_pixels": annotated, "total_pixels": total,
            "annotated_pct": 100.0 * annotated / total, "epochs": t.epochs, "seconds": round(seconds, 2),
            "final_loss": losses[-1], "loss": losses}
    write_json(Path(out_dir) / f"{source}.json", info)
    return info


def load_model(path: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    ckpt = torch.load(path, weights_only=True)
    model = build_model(ckpt["model"], 3, ckpt["n_classes"], ckpt["width"], ckpt["depth"], torch.Generator())
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["mean"], ckpt["std"]


def predict(model: torch.nn.Module, image: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        x = normalise(torch.from_numpy(image).permute(2, 0, 1)[None], mean, std)
        return model(x)[0].argmax(0).numpy().astype(np.uint8)


def evaluate_source(prepared: Prepared, model_path: Path) -> dict:
    model, mean, std = load_model(model_path)
    cm = np.zeros((prepared.n_classes, prepared.n_classes), np.int64)
    for row in prepared.split("val"):
        cm += confusion(predict(model, prepared.image(row), mean, std), prepared.label(row), prepared.n_classes)
    iou = iou_per_class(cm)
    return {"miou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "per_class_iou": {c["name"]: (None if np.isnan(iou[c["id"]]) else float(iou[c["id"]]))
                              for c in prepared.classes}}
