"""The prepare stage (howlow.data): each import layout on tiny fixture folders, the synthetic default,
scaling, subsets, the manifest, and clear errors that leave nothing in data/prepared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_params
from howlow.data import MANIFEST_COLUMNS, SYNTHETIC_CLASSES, load_prepared, prepare, synthetic_samples
from howlow.io import DataError, read_csv, read_image, read_json, read_label
from howlow.params import Params

H, W = 10, 12
OUT = Path("data/prepared")
CLASSES = [{"id": 0, "name": "sky", "color": "#0000ff"}, {"id": 1, "name": "road"}, {"id": 2, "name": "car"}]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def band_label(void: int | None = None) -> np.ndarray:
    """Vertical bands 0, 1, 2 (4 columns each); optionally 3 void pixels with id `void`."""
    label = np.repeat(np.arange(W, dtype=np.uint8)[None] // 4, H, 0)
    if void is not None:
        label[0, :3] = void
    return label


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def write_segnet(root: Path, names=(("train", "a"), ("train", "b"), ("val", "c")), void=11) -> Path:
    for i, (split, stem) in enumerate(names):
        for folder, arr in ((split, rgb(i)), (f"{split}annot", band_label(void))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / folder / f"{stem}.png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def write_images_labels(root: Path, names=(("train", "a"), ("train", "b"), ("val", "c")), image_ext=".jpg") -> Path:
    for i, (split, stem) in enumerate(names):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(i)).save(root / "images" / split / f"{stem}{image_ext}")
        Image.fromarray(band_label(255)).save(root / "labels" / split / f"{stem}.png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def folder_params(layout: str, source: str = "src", **data) -> Params:
    return make_params({"data": {"source": source, "layout": layout, **data}})


def synthetic_params(**syn) -> Params:
    return make_params({"data": {"synthetic": {"n_train": 2, "n_val": 1, "height": 32, "width": 40, **syn}}})


def manifest() -> list[dict]:
    return read_csv(OUT / "manifest.csv")


# --------------------------------------------------------------------------- layouts
def test_segnet_layout_maps_void_to_255():
    """segnet: train/ trainannot/ val/ valannot/; the source's void id 11 becomes 255; images unchanged."""
    write_segnet(Path("src"))
    prepare(folder_params("segnet", void_id=11), OUT)
    rows = manifest()
    assert [(r["split"], r["id"]) for r in rows] == [("train", "a"), ("train", "b"), ("val", "c")]
    label = read_label(OUT / "train/labels/a.png")
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, band_label(255))
    assert 11 not in label
    np.testing.assert_array_equal(read_image(OUT / "val/images/c.png"), rgb(2))
    assert read_json(OUT / "classes.json") == [
        {"id": 0, "name": "sky", "color": "#0000ff"},
        {"id": 1, "name": "road", "color": ""},
        {"id": 2, "name": "car", "color": ""},
    ]
    assert rows[0]["source_image"] == str(Path("src/train/a.png"))
    assert rows[0]["source_label"] == str(Path("src/trainannot/a.png"))
    assert rows[0]["label_ids"] == "0 1 2 255" and rows[0]["bad_label_pixels"] == "0"


def test_segnet_without_void_mapping_keeps_11_as_bad_id():
    """With the default void_id 255 an 11 in the labels stays 11 and is counted as a bad label pixel."""
    write_segnet(Path("src"))
    prepare(folder_params("segnet"), OUT)
    row = manifest()[0]
    assert row["label_ids"] == "0 1 2 11" and row["bad_label_pixels"] == "3" and float(row["void_fraction"]) == 0


def test_images_labels_layout_with_jpg_images():
    """images_labels: images/<split>/*.jpg with labels/<split>/*.png; ids are the file stems."""
    write_images_labels(Path("src"))
    prepare(folder_params("images_labels"), OUT)
    rows = manifest()
    assert [(r["split"], r["id"]) for r in rows] == [("train", "a"), ("train", "b"), ("val", "c")]
    assert rows[0]["source_image"] == str(Path("src/images/train/a.jpg"))
    prep = load_prepared(OUT)
    assert prep.n_classes == 3 and [r["id"] for r in prep.split("train")] == ["a", "b"]
    image = prep.image(prep.split("val")[0])
    assert image.shape == (H, W, 3)  # the decoded jpg, stored losslessly as PNG
    np.testing.assert_array_equal(image, read_image(Path("src/images/val/c.jpg")))
    np.testing.assert_array_equal(prep.label(prep.split("val")[0]), band_label(255))


def test_class_pixels_counts_per_split():
    """class_pixels.csv counts the training and validation pixels of every class (void excluded)."""
    write_images_labels(Path("src"))
    prepare(folder_params("images_labels"), OUT)
    counts = {(r["split"], int(r["class_id"])): int(r["pixels"]) for r in read_csv(OUT / "class_pixels.csv")}
    per_image = np.bincount(band_label(255).ravel(), minlength=256)[:3]
    for c in range(3):
        assert counts["train", c] == 2 * per_image[c] and counts["val", c] == per_image[c]


# --------------------------------------------------------------------------- synthetic default
def test_synthetic_is_deterministic_and_sized():
    """Same seed: identical images and labels; another seed: different; configured size and counts."""
    a, classes = synthetic_samples(synthetic_params())
    b, _ = synthetic_samples(synthetic_params())
    c, _ = synthetic_samples(
        make_params({"data": {"seed": 1, "synthetic": {"n_train": 2, "n_val": 1, "height": 32, "width": 40}}})
    )
    assert classes == SYNTHETIC_CLASSES
    assert [(s.split, s.id) for s in a] == [
        ("train", "syn_train_000"),
        ("train", "syn_train_001"),
        ("val", "syn_val_000"),
    ]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
    for x, z in zip(a, c):
        assert not np.array_equal(x.image, z.image)
    for s in a:
        assert s.image.shape == (32, 40, 3) and s.image.dtype == np.uint8
        assert s.label.shape == (32, 40) and s.label.dtype == np.uint8
    # adding images never changes existing ones
    more, _ = synthetic_samples(synthetic_params(n_train=3))
    np.testing.assert_array_equal(more[1].image, a[1].image)


def test_synthetic_prepare_has_every_class_and_void():
    """Prepared synthetic data: the configured counts, every class in the train split, some void."""
    params = synthetic_params(n_train=6, n_val=2)
    prepare(params, OUT)
    rows = manifest()
    assert sum(r["split"] == "train" for r in rows) == 6 and sum(r["split"] == "val" for r in rows) == 2
    assert all((r["height"], r["width"]) == ("32", "40") for r in rows)
    train = {int(r["class_id"]): int(r["pixels"]) for r in read_csv(OUT / "class_pixels.csv") if r["split"] == "train"}
    assert sorted(train) == list(range(len(SYNTHETIC_CLASSES))) and all(v > 0 for v in train.values())
    assert any(float(r["void_fraction"]) > 0 for r in rows)
    assert all(int(r["bad_label_pixels"]) == 0 for r in rows)
    assert read_json(OUT / "classes.json") == SYNTHETIC_CLASSES


# --------------------------------------------------------------------------- scale and subsets
def test_scale_bilinear_images_nearest_labels():
    """data.scale resizes images bilinearly (new grey levels) and labels by nearest (no new ids)."""
    root = Path("src")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        stripes = (np.arange(40) % 2 == 0)[None].repeat(30, 0)  # 1-px columns
        Image.fromarray(np.where(stripes, 200, 0).astype(np.uint8)[..., None].repeat(3, 2)).save(
            root / "images" / split / "s.png"
        )
        Image.fromarray(np.where(stripes, 2, 0).astype(np.uint8)).save(root / "labels" / split / "s.png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    prepare(folder_params("images_labels", scale=0.5), OUT)
    image, label = read_image(OUT / "train/images/s.png"), read_label(OUT / "train/labels/s.png")
    assert image.shape == (15, 20, 3) and label.shape == (15, 20)
    assert set(np.unique(label)) <= {0, 2}  # nearest: 1 (between 0 and 2) never appears
    assert len(set(np.unique(image)) - {0, 200}) > 0  # bilinear blends the stripes
    row = manifest()[0]
    assert (row["height"], row["width"], row["label_height"], row["label_width"]) == ("15", "20", "15", "20")


def test_max_train_max_val_pick_evenly_spaced():
    """max_train/max_val keep n images spread evenly over the sorted list (first and last included)."""
    names = [("train", s) for s in "abcde"] + [("val", s) for s in "vwxyz"]
    write_images_labels(Path("src"), names, image_ext=".png")
    prepare(folder_params("images_labels", max_train=3, max_val=4), OUT)
    rows = manifest()
    assert [r["id"] for r in rows if r["split"] == "train"] == ["a", "c", "e"]
    # 4 of 5: nearest to the ideal positions 0, 1.33, 2.67, 4
    assert [r["id"] for r in rows if r["split"] == "val"] == ["v", "w", "y", "z"]
    assert sorted(p.stem for p in (OUT / "train/images").iterdir()) == ["a", "c", "e"]
    prepare(folder_params("images_labels", max_train=10, max_val=1), OUT)  # more than there are: all
    assert [r["id"] for r in manifest() if r["split"] == "train"] == list("abcde")
    assert [r["id"] for r in manifest() if r["split"] == "val"] == ["v"]


# --------------------------------------------------------------------------- manifest
def test_manifest_columns_and_values():
    """Every MANIFEST_COLUMNS column with the right paths, sizes, dtype, void fraction, bad ids and id list."""
    root = write_images_labels(Path("src"), image_ext=".png")
    bad = band_label(255)
    bad[5, 5], bad[6, 6] = 7, 9  # 2 unknown ids (3 classes)
    Image.fromarray(bad).save(root / "labels/train/b.png")
    prepare(folder_params("images_labels"), OUT)
    assert (OUT / "manifest.csv").read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    a, b, c = manifest()
    assert a == {
        "id": "a",
        "split": "train",
        "image": "train/images/a.png",
        "label": "train/labels/a.png",
        "height": str(H),
        "width": str(W),
        "label_height": str(H),
        "label_width": str(W),
        "channels": "3",
        "label_dtype": "uint8",
        "void_fraction": str(round(3 / (H * W), 6)),
        "bad_label_pixels": "0",
        "label_ids": "0 1 2 255",
        "source_image": str(Path("src/images/train/a.png")),
        "source_label": str(Path("src/labels/train/a.png")),
    }
    assert b["bad_label_pixels"] == "2" and b["label_ids"] == "0 1 2 7 9 255"
    assert (c["split"], c["image"]) == ("val", "val/images/c.png")
    for r in (a, b, c):
        assert (OUT / r["image"]).is_file() and (OUT / r["label"]).is_file()


def test_prepare_replaces_previous_output():
    """A second prepare replaces data/prepared completely (no stale images) and leaves no temp folder."""
    write_images_labels(Path("src"), image_ext=".png")
    prepare(folder_params("images_labels"), OUT)
    Path("src/images/train/b.png").unlink()
    Path("src/labels/train/b.png").unlink()
    prepare(folder_params("images_labels"), OUT)
    assert [r["id"] for r in manifest()] == ["a", "c"]
    assert not (OUT / "train/images/b.png").exists()
    assert sorted(p.name for p in OUT.parent.iterdir()) == ["prepared"]


# --------------------------------------------------------------------------- errors
def _remove(path: str):
    def edit(root: Path):
        target = root / path if path else root
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return edit


def _classes_gap(root: Path):
    (root / "classes.json").write_text(json.dumps([{"id": 0, "name": "a"}, {"id": 2, "name": "b"}]))


def _rgb_label(root: Path):
    Image.fromarray(np.stack([band_label()] * 3, -1) * 40).save(root / "labels/train/b.png")


def _label16(root: Path):
    Image.fromarray(band_label().astype(np.uint16) * 300).save(root / "labels/train/b.png")
    assert Image.open(root / "labels/train/b.png").mode.startswith("I")


def _truncated_image(root: Path):
    path = root / "images/train/b.png"
    path.write_bytes(path.read_bytes()[:60])


def _garbage_image(root: Path):
    (root / "images/val/c.png").write_bytes(b"not a png at all")


def _orphan_label(root: Path):
    Image.fromarray(band_label()).save(root / "labels/val/zz.png")


@pytest.mark.parametrize(
    "edit, path, rule",
    [
        (_remove("classes.json"), "src/classes.json", "classes.json is missing"),
        (_classes_gap, "src/classes.json", "without gaps"),
        (_rgb_label, "src/labels/train/b.png", "single-channel"),
        (_label16, "src/labels/train/b.png", "8-bit"),
        (_truncated_image, "src/images/train/b.png", "cannot be read as an image"),
        (_garbage_image, "src/images/val/c.png", "cannot be read as an image"),
        (_remove("labels/train/b.png"), "src/images/train/b.png", "no label map"),
        (_orphan_label, "src/labels/val/zz.png", "without an image"),
        (_remove(""), "src", "folder not found"),
    ],
    ids=[
        "no_classes",
        "class_gap",
        "rgb_label",
        "label_16bit",
        "truncated_png",
        "corrupt_png",
        "image_without_label",
        "label_without_image",
        "missing_source",
    ],
)
def test_errors_name_the_file_and_write_nothing(edit, path, rule):
    """Bad input: one DataError naming the offending file and the rule; data/prepared is not created."""
    root = write_images_labels(Path("src"), image_ext=".png")
    edit(root)
    with pytest.raises(DataError) as exc:
        prepare(folder_params("images_labels"), OUT)
    message = str(exc.value)
    assert message.startswith(str(Path(path)) + ":"), message
    assert rule in message
    assert not Path("data").exists()  # neither data/prepared nor its temporary folder


def test_error_keeps_previous_prepared_output():
    """A failing prepare leaves an earlier good data/prepared untouched."""
    root = write_images_labels(Path("src"), image_ext=".png")
    prepare(folder_params("images_labels"), OUT)
    before = (OUT / "manifest.csv").read_text()
    _rgb_label(root)
    with pytest.raises(DataError, match=r"labels/train/b\.png"):
        prepare(folder_params("images_labels"), OUT)
    assert (OUT / "manifest.csv").read_text() == before
    assert sorted(p.name for p in OUT.parent.iterdir()) == ["prepared"]


def test_segnet_missing_annotation_names_image():
    """segnet: an image in train/ without a label in trainannot/ names the image and the folder."""
    root = write_segnet(Path("src"))
    (root / "trainannot/b.png").unlink()
    with pytest.raises(DataError) as exc:
        prepare(folder_params("segnet", void_id=11), OUT)
    assert str(exc.value).startswith(str(Path("src/train/b.png")))
    assert str(Path("src/trainannot")) in str(exc.value)
    assert not Path("data").exists()
