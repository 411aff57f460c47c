"""The validate stage on tiny data sets built by the real prepare stage (12x10 images, 3 classes).

Each bad fixture breaks one rule; the test checks the error names the offending file (the user's
original one where there is one) and the GX expectation type, and that the report is still written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_params
from howlow.data import prepare
from howlow.io import DataError, read_json
from howlow.params import Params
from howlow.validation import ValidationFailed, validate

PREPARED, REPORT = Path("data/prepared"), Path("reports/validation")  # in each test's tmp_path

H, W = 10, 12
CLASSES = [{"id": 0, "name": "sky"}, {"id": 1, "name": "road"}, {"id": 2, "name": "car"}]


def good_label() -> np.ndarray:
    """Vertical bands of classes 0, 1, 2 and one void pixel."""
    label = np.repeat(np.arange(W, dtype=np.uint8) * 3 // W, H).reshape(W, H).T.copy()
    label[0, 0] = 255
    return label


def write_source(root: Path, labels: dict[str, np.ndarray] | None = None, extra: tuple[str, ...] = ()) -> Path:
    """An `images_labels` folder: images/<split>/<id>.png, labels/<split>/<id>.png, classes.json.

    `labels` overrides the label of "split/id"; `extra` adds images (e.g. "train/a.jpg").
    """
    rng = np.random.default_rng(0)
    labels = labels or {}
    names = {"train/a.png", "train/b.png", "val/c.png", *extra}
    for name in names:
        split, file = name.split("/")
        key = f"{split}/{Path(file).stem}"
        label = labels.get(key, good_label())
        img = root / "images" / split / file
        lab = root / "labels" / split / f"{Path(file).stem}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(img)
        if label is not None:
            Image.fromarray(label).save(lab)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def folder_params(**validate) -> Params:
    return make_params({"data": {"source": "src", "layout": "images_labels"}, "validate": validate})


def prepared(labels=None, extra=(), **validate) -> Params:
    """Build src/ and data/prepared/ in the current folder (a tmp_path); return the params used."""
    write_source(Path("src"), labels, extra)
    params = folder_params(**validate)
    prepare(params, Path("data/prepared"))
    return params


def edit_manifest(column: str, value: str, row: int = 0) -> None:
    path = Path("data/prepared/manifest.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[row][column] = value
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def failure(params: Params) -> tuple[str, dict]:
    with pytest.raises(ValidationFailed) as exc:
        validate(params, PREPARED, REPORT)
    summary = read_json(Path("reports/validation/summary.json"))
    assert summary["success"] is False
    assert Path("reports/validation/docs/index.html").is_file()
    return str(exc.value), summary


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/, reports/ and anything GX writes stay out of the repo


def test_good_data_set_passes_and_writes_report(tmp_path):
    summary = validate(prepared(), PREPARED, REPORT)
    assert summary["success"] is True and summary["failed"] == []
    assert summary["images"] == 3 and summary["n_classes"] == 3
    assert all(e["success"] for e in summary["expectations"])
    types = {e["type"] for e in summary["expectations"]}
    assert {
        "expect_column_pair_values_to_be_equal",
        "expect_compound_columns_to_be_unique",
        "expect_column_distinct_values_to_contain_set",
    } <= types
    assert read_json(tmp_path / "reports/validation/summary.json") == summary
    index = tmp_path / "reports/validation/docs/index.html"
    assert index.is_file() and "manifest" in index.read_text()
    assert not (tmp_path / "gx").exists() and not (tmp_path / "reports/validation/.docs.tmp").exists()
    # a second run replaces the report (and the docs) rather than piling up pages
    assert validate(folder_params(), PREPARED, REPORT)["success"] is True
    assert len(list((tmp_path / "reports/validation/docs/validations").rglob("*.html"))) == 2


def test_the_stage_keeps_named_runs_on_named_assets(tmp_path):
    """GX names each run `<dataset>-<data digest>` and each data asset; the stage keeps every run's
    results in logs/validation, so the Data Docs list the history, a failed run included."""
    from howlow.data import dataset_digest
    from howlow.layout import Layout
    from howlow.stages import validate as stage

    params = prepared()
    first = stage.run(params, Layout(Path()))
    assert first["gx_run"] == f"src-{dataset_digest(PREPARED)[:8]}"
    assert stage.run(params, Layout(Path()))["gx_run"] == first["gx_run"]
    edit_manifest("label_width", "5")  # a third run, on other data, that fails
    with pytest.raises(ValidationFailed):
        stage.run(params, Layout(Path()))
    third = read_json(REPORT / "summary.json")["gx_run"]
    assert third != first["gx_run"]
    pages = sorted((REPORT / "docs/validations").rglob("*.html"))
    assert len(pages) == 6  # 2 tables x 3 runs
    runs = {p.parent.parent.name for p in pages}
    assert runs == {first["gx_run"], third}
    index = (REPORT / "docs/index.html").read_text()
    assert first["gx_run"] in index and third in index and "__none__" not in index
    assert index.index(third) < index.index(first["gx_run"])  # newest first
    for page in pages:
        table = page.parents[2].name
        assert f"Data asset: prepared.{table}" in page.read_text()
    assert len(list(Path("logs/validation").rglob("*.json"))) == 6


def test_size_mismatch():
    small = good_label()[:, :8]  # 8 wide instead of 12
    message, summary = failure(prepared({"train/b": small}))
    assert summary["failed"] == ["width_match"]
    assert (
        "data/prepared/train/labels/b.png (source: src/labels/train/b.png): "
        "label size 8x10 != image size 12x10 [expect_column_pair_values_to_be_equal]"
    ) in message
    assert "label width must equal image width" in message
    [f] = summary["expectations"][2]["failures"]
    assert (f["id"], f["split"], f["image"]) == ("b", "train", "data/prepared/train/images/b.png")


def test_label_id_out_of_range():
    label = good_label()
    label[5, 5] = 7  # 3 classes: ids 0..2 or void 255
    message, summary = failure(prepared({"val/c": label}))
    assert summary["failed"] == ["label_ids_known"]
    assert "label ids must be class ids 0..2 (classes.json) or void 255" in message
    assert (
        "data/prepared/val/labels/c.png (source: src/labels/val/c.png): 1 pixels with unknown ids "
        "(ids present: 0 1 2 7 255) [expect_column_values_to_be_between]"
    ) in message


def test_void_fraction_too_high():
    label = good_label()
    label[:6] = 255  # 60% void
    message, summary = failure(prepared({"train/a": label}, max_void_fraction=0.5))
    assert summary["failed"] == ["void_fraction"]
    assert "validate.max_void_fraction" in message
    assert (
        "data/prepared/train/labels/a.png (source: src/labels/train/a.png): void fraction 0.6 > 0.5 "
        "[expect_column_values_to_be_between]"
    ) in message


def test_duplicate_ids():
    # the same stem as .png and .jpg would both become image id "a": prepare refuses, naming both
    write_source(Path("src"), extra=("train/a.jpg",))
    with pytest.raises(DataError, match=r"src/images/train/a.png: same name as src/images/train/a.jpg"):
        prepare(folder_params(), Path("data/prepared"))
    assert not Path("data/prepared").exists()  # nothing half-written
    # a manifest that still repeats an id (hand-edited, or from another tool) fails validation
    Path("src/images/train/a.jpg").unlink()
    params = prepared()
    path = Path("data/prepared/manifest.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    message, summary = failure(params)
    assert summary["failed"] == ["ids_unique", "image_paths_unique"]
    assert "image ids must be unique within a split" in message
    assert (
        "data/prepared/train/images/a.png (source: src/images/train/a.png): id 'a' occurs more than once "
        "in split 'train' [expect_compound_columns_to_be_unique]"
    ) in message
    assert "[expect_column_values_to_be_unique]" in message


def test_empty_val_split():
    write_source(Path("src"))
    for p in (Path("src/images/val/c.png"), Path("src/labels/val/c.png")):
        p.unlink()
    params = folder_params()
    prepare(params, Path("data/prepared"))
    message, summary = failure(params)
    assert summary["failed"] == ["splits_present"]
    assert (
        "data/prepared/manifest.csv: no images in split(s) val [expect_column_distinct_values_to_contain_set]"
    ) in message


def test_class_never_in_train():
    no_car = good_label()
    no_car[no_car == 2] = 1
    message, summary = failure(prepared({"train/a": no_car, "train/b": no_car}))
    assert summary["failed"] == ["classes_in_train"]
    assert "every class of classes.json must occur in at least 1 training label pixel" in message
    assert (
        "data/prepared/class_pixels.csv: class 2 (car): 0 training pixels < 1 [expect_column_values_to_be_between]"
    ) in message
    [f] = next(e for e in summary["expectations"] if e["name"] == "classes_in_train")["failures"]
    assert (f["class_id"], f["name"]) == (2, "car")


@pytest.mark.parametrize(
    "column, value, rule, file, detail",
    [
        ("label_dtype", "uint16", "label_dtype", "labels/a.png", "label dtype uint16"),
        ("channels", "4", "image_channels", "images/a.png", "4 channels (convert to RGB first"),
    ],
)
def test_wrong_dtype_or_channels(column, value, rule, file, detail):
    params = prepared()
    edit_manifest(column, value)  # prepare refuses 16-bit labels itself (RGBA: tests/test_bad_input.py)
    message, summary = failure(params)
    assert summary["failed"] == [rule]
    assert f"data/prepared/train/{file} (source: src/{file.split('/')[0]}/train/a.png): {detail}" in message


def test_missing_column_and_missing_prepared():
    with pytest.raises(DataError, match="run the prepare stage first"):
        validate(folder_params(), PREPARED, REPORT)
    params = prepared()
    path = Path("data/prepared/manifest.csv")
    lines = [",".join(line.split(",")[:-1]) for line in path.read_text().splitlines()]  # drop source_label
    path.write_text("\n".join(lines) + "\n")
    message, summary = failure(params)
    assert summary["failed"] == ["columns"]
    assert "missing columns ['source_label'] [expect_table_columns_to_match_set]" in message
    path.write_text("")
    with pytest.raises(DataError, match=r"manifest\.csv: not a readable CSV"):
        validate(params, PREPARED, REPORT)
