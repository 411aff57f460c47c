"""Import a data set (or build the embedded synthetic default) into one canonical form.

Output (`Layout.prepared`, `data/prepared/`):
  classes.json                [{id, name, color}] with ids 0..K-1
  <split>/images/<id>.png     RGB uint8
  <split>/labels/<id>.png     uint8 class ids, void = 255 whatever the source used
  manifest.csv                one row per image (columns: MANIFEST_COLUMNS)
  class_pixels.csv            pixels per (split, class id) - lets validation check every class occurs

Supported layouts: `segnet` (train/ trainannot/ val/ valannot/ + classes.json, e.g. CamVid),
`images_labels` (images/<split>/ labels/<split>/ + classes.json), and `synthetic`.
The whole folder is built under a temporary name and renamed at the end: never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .io import (
    VOID,
    DataError,
    read_csv,
    read_image,
    read_image_channels,
    read_json,
    read_label,
    write_csv,
    write_json,
    write_png,
)
from .params import Params

SPLITS = ("train", "val")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MANIFEST_COLUMNS = [
    "id",
    "split",
    "image",
    "label",
    "height",
    "width",
    "label_height",
    "label_width",
    "channels",
    "label_dtype",
    "void_fraction",
    "bad_label_pixels",
    "label_ids",
    "source_image",
    "source_label",
]

SYNTHETIC_CLASSES = [
    {"id": 0, "name": "sky", "color": "#87CEEB"},
    {"id": 1, "name": "building", "color": "#8B4513"},
    {"id": 2, "name": "road", "color": "#505050"},
    {"id": 3, "name": "vegetation", "color": "#228B22"},
    {"id": 4, "name": "car", "color": "#DC143C"},
    {"id": 5, "name": "ground", "color": "#D2B48C"},
]


@dataclass(frozen=True)
class Sample:
    id: str
    split: str
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, canonical void
    source_image: str = ""
    source_label: str = ""
    channels: int = 3  # of the source file (io.read_image_channels); validation takes 1 or 3


# --------------------------------------------------------------------------- synthetic default
def synthetic_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A street-like scene whose classes differ by texture, shape and position, not by one flat colour.

    Colours of buildings, road and ground overlap on purpose and cars get random colours, so a network
    must use texture (window grids, speckle, stripes) and layout to tell them apart.
    """
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    label = np.zeros((h, w), np.uint8)
    img = np.zeros((h, w, 3), np.float32)

    horizon = int(h * rng.uniform(0.35, 0.5))
    # sky: vertical gradient, smooth
    top, bottom = rng.uniform([90, 140, 200], [140, 190, 250]), rng.uniform([170, 200, 220], [220, 230, 250])
    t = (yy / max(horizon, 1))[..., None]
    img[:] = top * (1 - t) + bottom * t

    # ground (5) everywhere below the horizon: sandy speckle
    below = yy >= horizon
    label[below] = 5
    ground_col = rng.uniform([120, 110, 90], [170, 150, 120])
    img[below] = ground_col + rng.normal(0, 22, (int(below.sum()), 3))

    # road (2): a trapezoid from a vanishing point to the bottom, with dashed centre stripes
    cx = w * rng.uniform(0.35, 0.65)
    half_bottom = w * rng.uniform(0.3, 0.45)
    frac = np.clip((yy - horizon) / max(h - horizon, 1), 0, 1)
    road = below & (np.abs(xx - cx) <= 3 + frac * half_bottom)
    label[road] = 2
    road_col = rng.uniform(95, 140)
    img[road] = road_col + rng.normal(0, 5, (int(road.sum()), 3))
    stripe = road & (np.abs(xx - cx) <= 1 + frac * 2) & ((yy.astype(int) // 6) % 2 == 0)
    img[stripe] = 235

    # buildings (1): rectangles standing on the horizon with a grid of dark windows
    x = rng.integers(0, w // 8)
    while x < w:
        bw = int(rng.integers(w // 8, w // 4))
        if rng.random() < 0.75:
            bh = int(rng.integers(horizon // 3, horizon))
            y0 = max(horizon - bh, 0)
            box = (yy >= y0) & (yy < horizon) & (xx >= x) & (xx < x + bw)
            label[box] = 1
            col = rng.uniform(90, 170) + rng.uniform(-25, 25, 3)
            img[box] = col
            period, win = int(rng.integers(5, 8)), int(rng.integers(2, 4))
            windows = box & (((yy - y0) % period) < win) & (((xx - x) % period) < win)
            img[windows] = col * 0.35
        x += bw + int(rng.integers(0, w // 10))

    # vegetation (3): blobs of circles around the horizon, high-frequency green noise
    for _ in range(int(rng.integers(1, 4))):
        bx, by = rng.uniform(0, w), horizon + rng.uniform(-h * 0.15, h * 0.05)
        blob = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(3, 7))):
            r = rng.uniform(h * 0.05, h * 0.12)
            ox, oy = bx + rng.normal(0, r), by + rng.normal(0, r * 0.7)
            blob |= (xx - ox) ** 2 + (yy - oy) ** 2 <= r * r
        blob &= ~road
        label[blob] = 3
        noise = rng.normal(0, 1, (h, w))
        img[blob] = np.stack([60 + 25 * noise, 120 + 45 * noise, 50 + 20 * noise], -1)[blob]

    # cars (4): rounded boxes on the road, random body colour, dark wheels; a void band around each
    void = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 4))):
        cy = rng.uniform(horizon + (h - horizon) * 0.3, h - 6)
        f = (cy - horizon) / max(h - horizon, 1)
        cw, ch = max(6, w * 0.22 * f), max(4, h * 0.12 * f)
        ccx = cx + rng.uniform(-0.6, 0.6) * f * half_bottom
        body = (np.abs(xx - ccx) / (cw / 2)) ** 4 + (np.abs(yy - cy) / (ch / 2)) ** 4 <= 1
        if not body.any():
            continue
        ring = ndimage.binary_dilation(body, iterations=1) & ~body
        label[body] = 4
        void |= ring
        img[body] = rng.uniform(20, 235, 3)
        wheels = body & (yy > cy + ch * 0.2) & (np.abs(np.abs(xx - ccx) - cw * 0.3) < cw * 0.12)
        img[wheels] = 25
        glass = body & (yy < cy - ch * 0.1) & (np.abs(xx - ccx) < cw * 0.3)
        img[glass] = img[glass] * 0.5 + 60
    label[void] = VOID

    img *= rng.uniform(0.8, 1.15)  # exposure
    img += rng.normal(0, 6, img.shape)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8), label


def synthetic_samples(params: Params) -> tuple[list[Sample], list[dict]]:
    syn = params.data.synthetic
    samples = []
    for split, n in (("train", syn.n_train), ("val", syn.n_val)):
        for i in range(n):
            # one stream per image: adding images never changes the existing ones
            rng = np.random.default_rng([params.data.seed, SPLITS.index(split), i])
            image, label = synthetic_scene(rng, syn.height, syn.width)
            samples.append(Sample(f"syn_{split}_{i:03d}", split, image, label))
    return samples, SYNTHETIC_CLASSES


# --------------------------------------------------------------------------- folder layouts
def read_classes(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: classes.json is missing (a list of {{id, name, color}}, ids 0..K-1)")
    try:
        classes = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in classes):
        raise DataError(f"{path}: must be a list of objects with 'id' and 'name'")
    ids = sorted(int(c["id"]) for c in classes)
    if ids != list(range(len(ids))):
        raise DataError(f"{path}: class ids must be 0..K-1 without gaps, got {ids}")
    return [
        {"id": int(c["id"]), "name": str(c["name"]), "color": c.get("color", "")}
        for c in sorted(classes, key=lambda c: int(c["id"]))
    ]


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    for path in found:
        try:
            path.name.encode()
        except UnicodeEncodeError:  # bytes that are not UTF-8: the manifest and every report name files in UTF-8
            raise DataError(
                f"{folder / ascii(path.name)[1:-1]}: file names must be valid UTF-8 (rename the file)"
            ) from None
    return found


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in _list_images(folder):
        if path.stem in found:  # a.png and a.jpg would both become image id "a"
            raise DataError(f"{path}: same name as {found[path.stem]}; image ids (file stems) must be unique")
        found[path.stem] = path
    return found


def _pairs(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    images, labels = _by_stem(image_dir), _by_stem(label_dir)
    for stem, path in labels.items():
        if stem not in images:
            raise DataError(f"{path}: label map without an image of the same name in {image_dir}")
    pairs = []
    for stem, img in images.items():
        if stem not in labels:
            raise DataError(f"{img}: no label map with the same name in {label_dir}")
        pairs.append((img, labels[stem]))
    return pairs


def _subset(items: list, n: int) -> list:
    """n evenly spaced items (deterministic, spread over the whole sorted list); 0 = all."""
    if n == 0 or n >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def source_folder(params: Params, project: Path) -> Path:
    """`data.source` as a folder: a relative path is read from the project folder (and given relative
    to the working folder, as the files in the manifest and in error messages are named)."""
    source = Path(params.data.source)
    return source if source.is_absolute() else Path(os.path.relpath(project / source))


def folder_samples(params: Params, project: Path) -> tuple[list[Sample], list[dict]]:
    d = params.data
    root = source_folder(params, project)
    if not root.is_dir():
        raise DataError(f"{root}: data.source folder not found")
    classes = read_classes(root / "classes.json")
    samples = []
    for split in SPLITS:
        if d.layout == "segnet":
            pairs = _pairs(root / split, root / f"{split}annot")
        else:
            pairs = _pairs(root / "images" / split, root / "labels" / split)
        for img_path, lab_path in _subset(pairs, d.max_train if split == "train" else d.max_val):
            (image, channels), label = read_image_channels(img_path), read_label(lab_path)
            if d.void_id != VOID:
                # the source's void id becomes 255; a 255 already in the source was void-like too
                label = np.where(label == d.void_id, VOID, label).astype(np.uint8)
            samples.append(Sample(img_path.stem, split, image, label, str(img_path), str(lab_path), channels))
    return samples, classes


# --------------------------------------------------------------------------- the stage
def _resize(sample: Sample, scale: float) -> Sample:
    if scale == 1.0:
        return sample

    def size(a):
        return max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale))

    image = np.asarray(Image.fromarray(sample.image).resize(size(sample.image), Image.Resampling.BILINEAR))
    label = np.asarray(Image.fromarray(sample.label).resize(size(sample.label), Image.Resampling.NEAREST))
    return replace(sample, image=image, label=label)


def manifest_row(s: Sample, n_classes: int) -> dict:
    lab = s.label
    valid_ids = (lab < n_classes) | (lab == VOID)
    return {
        "id": s.id,
        "split": s.split,
        "image": f"{s.split}/images/{s.id}.png",
        "label": f"{s.split}/labels/{s.id}.png",
        "height": s.image.shape[0],
        "width": s.image.shape[1],
        "label_height": lab.shape[0],
        "label_width": lab.shape[1],
        "channels": s.channels,
        "label_dtype": str(lab.dtype),
        "void_fraction": round(float((lab == VOID).mean()), 6),
        "bad_label_pixels": int((~valid_ids).sum()),
        "label_ids": " ".join(str(i) for i in np.unique(lab)),
        "source_image": s.source_image,
        "source_label": s.source_label,
    }


def prepare(params: Params, out_dir: Path, project: Path | None = None) -> Path:
    """Import the data set named in `params.data` into `out_dir` (see module docstring); a relative
    `data.source` is read from `project` (default: the working folder)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, but a folder is needed there (the prepared data set)")
    if params.data.layout == "synthetic":
        samples, classes = synthetic_samples(params)
    else:
        samples, classes = folder_samples(params, project or Path.cwd())
    n_classes = len(classes)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        rows, class_pixels = [], np.zeros((len(SPLITS), n_classes), np.int64)
        for s in samples:
            s = _resize(s, params.data.scale)
            write_png(tmp / s.split / "images" / f"{s.id}.png", s.image)
            write_png(tmp / s.split / "labels" / f"{s.id}.png", s.label)
            rows.append(manifest_row(s, n_classes))
            counts = np.bincount(s.label.ravel(), minlength=256)[:n_classes]
            class_pixels[SPLITS.index(s.split)] += counts
        write_csv(tmp / "manifest.csv", rows, MANIFEST_COLUMNS)
        write_csv(
            tmp / "class_pixels.csv",
            [
                {"split": split, "class_id": c["id"], "name": c["name"], "pixels": int(class_pixels[i, c["id"]])}
                for i, split in enumerate(SPLITS)
                for c in classes
            ],
        )
        write_json(tmp / "classes.json", classes)
        # swap by renames: a crash never leaves a half-written folder (at worst the old one as .<name>.old)
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------- readers for later stages
@dataclass(frozen=True)
class Prepared:
    root: Path
    classes: list[dict]
    rows: list[dict]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split(self, split: str) -> list[dict]:
        return [r for r in self.rows if r["split"] == split]

    def image(self, row: dict) -> np.ndarray:
        return read_image(self.root / row["image"])

    def label(self, row: dict) -> np.ndarray:
        return read_label(self.root / row["label"])


def load_prepared(root: Path) -> Prepared:
    root = Path(root)
    if not (root / "manifest.csv").is_file():
        raise DataError(f"{root / 'manifest.csv'}: not found; run the prepare stage first")
    return Prepared(root, read_json(root / "classes.json"), read_csv(root / "manifest.csv"))


def dataset_digest(prepared_dir: Path) -> str:
    """A digest of the prepared data set (every file's path and bytes): equal digests, equal data. It
    names the data set's MLflow input and its Great Expectations validation runs."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(prepared_dir).rglob("*") if p.is_file()):
        h.update(path.relative_to(prepared_dir).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
