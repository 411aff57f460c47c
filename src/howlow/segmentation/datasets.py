"""The data-set network's data: each label source's training targets, what they cost, and torch
`Dataset`s over the training images (joint image + mask transforms) and the val split.

Label sources (all on the same training images, the ones the Oracle annotated, so the comparison is fair):
  full    the ground-truth label maps
  pseudo  the per-image networks' labels for every pixel (annotation cost: the revealed pixels)
  confident  pseudo-labels where the per-image network is at least `train.confidence` sure, else
          unlabelled (same cost as pseudo)
  sparse  only the revealed pixels; the loss ignores every other pixel
  random  as many pixels per image as were revealed, chosen uniformly at random among valid pixels
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data import Prepared
from ..io import VOID, DataError, read_csv, read_json, read_label
from ..layout import Layout
from ..params import Params


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
    oracle_dir, pseudo_dir = Path(layout.oracle), Path(layout.pseudo)
    if source == "full":
        return truth
    if source == "pseudo":
        return resample_nearest(read_label(pseudo_dir / f"{row['id']}.png"), truth.shape)
    if source == "confident":
        target = resample_nearest(read_label(pseudo_dir / f"{row['id']}.png"), truth.shape).copy()
        conf = resample_nearest(read_label(pseudo_dir / f"{row['id']}_conf.png"), truth.shape)  # x 255
        target[conf < round(params.train.confidence * 255)] = VOID
        return target
    result = read_json(oracle_dir / f"{row['id']}.json")
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
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    return v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: VOID})


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, target) pairs: a normalised float (3, H, W) image and an int64 (H, W) map, void 255.
    `transform` (torchvision v2) gets image and mask together, so both take one geometry; its random
    draws come from torch's global generator (the training checkpoints store its state)."""

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray],
        mean: torch.Tensor,
        std: torch.Tensor,
        transform: v2.Transform | None = None,
    ):
        self.images = [tv_tensors.Image(torch.from_numpy(im).permute(2, 0, 1)) for im in images]
        self.targets = [tv_tensors.Mask(torch.from_numpy(t.astype(np.int64))) for t in targets]
        self.mean, self.std, self.transform = mean, std, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.images[i], self.targets[i]
        if self.transform is not None:
            image, target = self.transform(image, target)
        return normalise(image[None], self.mean, self.std)[0], target.as_subclass(torch.Tensor)


@dataclass
class SourceData:
    """The training images and one label source's targets, with the annotation cost and the
    normalisation the network is trained (and later applied) with."""

    ids: list[str]
    images: list[np.ndarray]  # (H, W, 3) uint8
    targets: list[np.ndarray]  # (H, W) uint8, void 255
    annotated: int  # pixels a person labels for this source
    total: int  # pixels of the images at the resolution they were annotated at
    mean: torch.Tensor
    std: torch.Tensor


def source_data(params: Params, source: str, prepared: Prepared, ids: list[str], layout: Layout) -> SourceData:
    rows = [r for r in prepared.split("train") if r["id"] in ids]
    if not rows:
        raise DataError(f"{layout.prepared}: none of the {len(ids)} annotated images is a training image")
    summary_path = Path(layout.oracle) / "summary.csv"
    summary = {r["id"]: r for r in read_csv(summary_path)}
    images, targets, annotated, total = [], [], 0, 0
    for row in rows:
        if row["id"] not in summary:
            raise DataError(f"{summary_path}: no row for training image {row['id']!r}")
        target = label_map(source, params, prepared, row, layout)
        truth = prepared.label(row)
        annotated += annotated_pixels(source, target, truth, int(summary[row["id"]]["revealed"]))
        # a share of the image at the resolution it was annotated at (the Oracle's, for the sparse sources)
        total += truth.size if source == "full" else int(summary[row["id"]]["pixels"])
        images.append(prepared.image(row))
        targets.append(target)
    stacked = torch.cat([torch.from_numpy(im).reshape(-1, 3).T for im in images], 1).float() / 255.0
    mean, std = stacked.mean(1), stacked.std(1) + 1e-6
    return SourceData([r["id"] for r in rows], images, targets, annotated, total, mean, std)


def val_dataset(prepared: Prepared, mean: torch.Tensor, std: torch.Tensor) -> SegmentationDataset:
    """The whole val split, untransformed (images may differ in size: load it with batch_size 1)."""
    rows = prepared.split("val")
    return SegmentationDataset([prepared.image(r) for r in rows], [prepared.label(r) for r in rows], mean, std)
