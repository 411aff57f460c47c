"""The data-set network's data: each label source's training targets, what they cost, and torch
`Dataset`s over the training images (joint image + mask transforms) and the val split.

Label sources (all on the same training images, the ones the Oracle annotated, so the comparison is fair):
  full    the ground-truth label maps
  pseudo  the per-image networks' labels for every pixel (annotation cost: the revealed pixels)
  confident  pseudo-labels where the per-image network is at least `train.confidence` sure, else
          unlabelled (same cost as pseudo)
  sparse  only the revealed pixels; the loss ignores every other pixel
  random  as many pixels per image as were revealed, chosen uniformly at random among valid pixels
  random_pseudo  as many clicks per image at random, propagated by per-image networks as the Oracle's
          clicks are (a data-set study's control: the value of the Oracle's choice of pixels)

The clicks behind a budget come as an `Annotation` per image: the pipeline's from the oracle stage
(`pipeline_annotations`), a data-set study's from its annotations/ at one target.
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


@dataclass(frozen=True)
class Annotation:
    """One image's clicks at one budget: rows [y, x, class, round] at the resolution annotated."""

    clicks: np.ndarray
    height: int
    width: int


def pipeline_annotations(layout: Layout) -> dict[str, Annotation]:
    """The oracle stage's clicks of every annotated image (data/oracle/<id>.json)."""
    out = {}
    for row in read_csv(Path(layout.oracle) / "summary.csv"):
        result = read_json(Path(layout.oracle) / f"{row['id']}.json")
        clicks = np.array(result["revealed"], np.int64).reshape(-1, 4)
        out[row["id"]] = Annotation(clicks, int(result["summary"]["height"]), int(result["summary"]["width"]))
    return out


def label_map(
    source: str, params: Params, prepared: Prepared, row: dict, layout: Layout, ann: Annotation
) -> np.ndarray:
    """The training target of one image for a label source (void 255 = no label). The Oracle may
    have annotated the image at another resolution (`study.oracle_scale`): its labels are resampled
    to the training image (nearest; a revealed pixel labels the training pixel it falls in)."""
    truth = prepared.label(row)
    if source == "full":
        return truth
    if source in ("pseudo", "random_pseudo"):
        folder = Path(layout.pseudo if source == "pseudo" else layout.random_pseudo)
        return resample_nearest(read_label(folder / f"{row['id']}.png"), truth.shape)
    if source == "confident":
        pseudo_dir = Path(layout.pseudo)
        target = resample_nearest(read_label(pseudo_dir / f"{row['id']}.png"), truth.shape).copy()
        conf = resample_nearest(read_label(pseudo_dir / f"{row['id']}_conf.png"), truth.shape)  # x 255
        target[conf < round(params.train.confidence * 255)] = VOID
        return target
    target = np.full_like(truth, VOID)
    if source == "sparse":
        ys = (ann.clicks[:, 0] * truth.shape[0]) // ann.height
        xs = (ann.clicks[:, 1] * truth.shape[1]) // ann.width
        target[ys, xs] = ann.clicks[:, 2]
        return target
    if source == "random":
        rng = np.random.default_rng([params.train.seed, zlib.crc32(row["id"].encode())])
        ys, xs = np.nonzero(truth != VOID)
        pick = rng.choice(len(ys), size=min(len(ann.clicks), len(ys)), replace=False)
        target[ys[pick], xs[pick]] = truth[ys[pick], xs[pick]]
        return target
    raise ValueError(f"unknown label source {source!r}")


def annotated_pixels(source: str, target: np.ndarray, truth: np.ndarray, n_revealed: int) -> int:
    """What the labels of a source cost a human: every valid pixel for `full`, the clicks for
    `pseudo`, `confident` and `sparse` (their labels come from those) and for `random_pseudo` (as
    many random clicks), the labelled pixels for `random`."""
    if source == "full":
        return int((truth != VOID).sum())
    if source in ("pseudo", "confident", "sparse", "random_pseudo"):
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
    t = params.train
    crop = v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: VOID})
    if not t.augment:
        return crop
    if t.zoom:
        crop = v2.RandomResizedCrop(size, scale=(t.zoom[0], t.zoom[1]), antialias=True)
    return v2.Compose([crop, v2.RandomHorizontalFlip()])


def class_weights(params: Params, targets: list[np.ndarray], n_classes: int) -> torch.Tensor | None:
    """The loss's per-class weights from a source's own labels (`train.class_weights`): median
    frequency balancing, weight = median(f) / f_c with f_c a class's pixels over the pixels of the
    images it appears in; a class absent from the labels weighs 1. None: unweighted."""
    if params.train.class_weights == "none":
        return None
    count, seen = np.zeros(n_classes), np.zeros(n_classes)
    for target in targets:
        valid = target[target != VOID]
        c = np.bincount(valid, minlength=n_classes)[:n_classes]
        count += c
        seen += (c > 0) * valid.size
    present = count > 0
    freq = np.where(present, count / np.maximum(seen, 1), 0.0)
    weights = np.ones(n_classes)
    weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)


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


def source_data(
    params: Params,
    source: str,
    prepared: Prepared,
    ids: list[str],
    layout: Layout,
    annotations: dict[str, Annotation] | None = None,
) -> SourceData:
    """The images `ids` with one source's targets; the clicks come from `annotations` (default:
    the pipeline's oracle stage; `full` needs none)."""
    rows = [r for r in prepared.split("train") if r["id"] in ids]
    if not rows:
        raise DataError(f"{layout.prepared}: none of the {len(ids)} annotated images is a training image")
    if annotations is None and source != "full":
        annotations = pipeline_annotations(layout)
    images, targets, annotated, total = [], [], 0, 0
    for row in rows:
        truth = prepared.label(row)
        if source == "full":
            target = truth
            annotated += annotated_pixels(source, target, truth, 0)
            total += truth.size
        else:
            assert annotations is not None
            if row["id"] not in annotations:
                raise DataError(f"{layout.oracle}: no clicks for training image {row['id']!r}")
            ann = annotations[row["id"]]
            target = label_map(source, params, prepared, row, layout, ann)
            annotated += annotated_pixels(source, target, truth, len(ann.clicks))
            # a share of the image at the resolution it was annotated at (the Oracle's)
            total += ann.height * ann.width
        images.append(prepared.image(row))
        targets.append(target)
    stacked = torch.cat([torch.from_numpy(im).reshape(-1, 3).T for im in images], 1).float() / 255.0
    mean, std = stacked.mean(1), stacked.std(1) + 1e-6
    return SourceData([r["id"] for r in rows], images, targets, annotated, total, mean, std)


def val_dataset(prepared: Prepared, mean: torch.Tensor, std: torch.Tensor) -> SegmentationDataset:
    """The whole val split, untransformed (images may differ in size: load it with batch_size 1)."""
    rows = prepared.split("val")
    return SegmentationDataset([prepared.image(r) for r in rows], [prepared.label(r) for r in rows], mean, std)
