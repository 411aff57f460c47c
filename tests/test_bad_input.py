"""Bad input through the `howlow` command, one case per test: exit status 2, one clear message naming the
file (or key) and the rule, no traceback, nothing half-written (no data/prepared after a failed prepare,
and a previously good data/prepared left as it was). Cases test_cli.py covers already (unknown strategy,
target_accuracy > 1, an unknown key, a missing classes.json) are not repeated here."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, howlow

H, W = 16, 20
CLASSES = [
    {"id": 0, "name": "sky", "color": "#0000ff"},
    {"id": 1, "name": "road", "color": "#505050"},
    {"id": 2, "name": "car", "color": "#dc143c"},
]
NAMES = (("train", "a"), ("train", "b"), ("val", "c"))


def band_label() -> np.ndarray:
    """Vertical bands of classes 0, 1, 2: every class occurs in every label, no void."""
    return (np.arange(W, dtype=np.uint8)[None].repeat(H, 0) * 3 // W).astype(np.uint8)


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def work(tmp_path) -> Path:
    """tmp_path with the repo's params.yaml and a good images_labels data set in src/."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    src = tmp_path / "src"
    for i, (split, stem) in enumerate(NAMES):
        (src / "images" / split).mkdir(parents=True, exist_ok=True)
        (src / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(i)).save(src / "images" / split / f"{stem}.png")
        Image.fromarray(band_label()).save(src / "labels" / split / f"{stem}.png")
    (src / "classes.json").write_text(json.dumps(CLASSES))
    return tmp_path


DATA = ("data.source=src", "data.layout=images_labels")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(stage: str, cwd: Path, *overrides: str, data: tuple[str, ...] = DATA) -> str:
    """Run `howlow <stage>`; check it failed cleanly; return its one error message."""
    done = howlow(stage, *data, *overrides, cwd=cwd)
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count(f"howlow {stage}: error: ") == 1, done.stderr
    assert done.stdout == ""
    # nothing half-written by prepare, whatever the stage
    assert not (cwd / "data" / ".prepared.tmp").exists()
    return done.stderr[done.stderr.index(f"howlow {stage}: error: ") :]


def prepare_ok(cwd: Path) -> None:
    done = howlow("prepare", *DATA, cwd=cwd)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- prepare: unreadable data
def test_truncated_png_image_fails_and_keeps_previous_prepared(work):
    prepare_ok(work)
    before = snapshot(work / "data" / "prepared")
    bad = Path("src/images/train/b.png")
    (work / bad).write_bytes((work / bad).read_bytes()[:60])  # cut short
    err = fails("prepare", work)
    assert f"{bad}: cannot be read as an image" in err
    # the good data/prepared of the previous run is untouched
    assert snapshot(work / "data" / "prepared") == before


def test_corrupt_image_bytes_fail_with_nothing_written(work):
    bad = Path("src/images/val/c.png")
    (work / bad).write_bytes(b"this is not a PNG file at all")
    err = fails("prepare", work)
    assert f"{bad}: cannot be read as an image" in err
    assert not (work / "data").exists()


def test_rgb_colour_mask_fails(work):
    bad = Path("src/labels/train/a.png")
    colours = np.array([[0, 0, 255], [80, 80, 80], [220, 20, 60]], np.uint8)
    Image.fromarray(colours[band_label()]).save(work / bad)
    err = fails("prepare", work)
    assert f"{bad}: label maps must be single-channel class ids, got RGB with 3 channels" in err
    assert not (work / "data").exists()


def test_16_bit_labels_fail(work):
    bad = Path("src/labels/train/b.png")
    Image.fromarray(band_label().astype(np.uint16)).save(work / bad)
    assert Image.open(work / bad).mode.startswith("I")  # really a 16-bit PNG
    err = fails("prepare", work)
    assert f"{bad}: label maps must be 8-bit class ids (uint8)" in err
    assert not (work / "data").exists()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels and holds none: enough for PIL to refuse it unread."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_fails_with_one_line(work):
    bad = Path("src/images/train/b.png")
    (work / bad).write_bytes(png_header_only(20000, 20000))
    err = fails("prepare", work)
    assert f"{bad}: too large to read as an image (Image size (400000000 pixels) exceeds limit" in err
    assert not (work / "data").exists()


def test_non_utf8_file_name_fails_naming_the_file(work):
    folder = work / "src/images/train"
    name = os.fsdecode(b"b\xff.png")  # not UTF-8: a surrogate escape in Python
    (folder / "b.png").rename(folder / name)
    err = fails("prepare", work)
    assert f"{Path('src/images/train')}/b\\udcff.png: file names must be valid UTF-8 (rename the file)" in err
    assert not (work / "data").exists()


def test_16_bit_image_fails(work):
    bad = Path("src/images/train/a.png")
    Image.fromarray(rgb(0)[..., 0].astype(np.uint16) * 257).save(work / bad)
    assert Image.open(work / bad).mode.startswith("I")
    err = fails("prepare", work)
    assert f"{bad}: images must have 8 bits per channel, got mode I" in err
    assert not (work / "data").exists()


def test_grayscale_images_are_taken_as_three_equal_channels(work):
    """Policy (io.read_image_channels): a grayscale image is a colour image with R = G = B."""
    gray = rgb(0)[..., 0]
    Image.fromarray(gray).save(work / "src/images/train/a.png")
    prepare_ok(work)
    done = howlow("validate", *DATA, cwd=work)
    assert done.returncode == 0, done.stderr
    prepared = np.array(Image.open(work / "data/prepared/train/images/a.png"))
    assert prepared.shape == (H, W, 3) and (prepared == gray[..., None]).all()


def test_rgba_image_fails_validation_on_its_channels(work):
    """Policy: an alpha channel is not dropped silently; rule image_channels refuses it."""
    bad = Path("src/images/train/b.png")
    Image.fromarray(np.dstack([rgb(1), np.full((H, W), 128, np.uint8)])).save(work / bad)
    prepare_ok(work)
    err = fails("validate", work)
    assert "images must be colour (3 channels) or grayscale (1), without alpha:" in err
    assert f"(source: {bad}): 4 channels (convert to RGB first" in err
    summary = json.loads((work / "reports/validation/summary.json").read_text())
    assert summary["failed"] == ["image_channels"]


# --------------------------------------------------------------------------- validate: broken rules
def test_image_label_size_mismatch_fails_validation(work):
    bad = Path("src/labels/train/b.png")
    Image.fromarray(band_label()[:, : W - 2]).save(work / bad)
    prepare_ok(work)
    err = fails("validate", work)
    assert "label width must equal image width:" in err
    assert (
        f"{Path('data/prepared/train/labels/b.png')} (source: {bad}): label size {W - 2}x{H} != "
        f"image size {W}x{H}" in err
    )
    # only b breaks a rule
    assert "labels/a.png" not in err and "labels/c.png" not in err
    summary = json.loads((work / "reports/validation/summary.json").read_text())
    assert summary["success"] is False and summary["failed"] == ["width_match"]


def test_label_ids_out_of_range_fail_validation(work):
    label = band_label()
    label[0, :4] = 7  # 3 classes in classes.json: ids 0..2 (and void 255)
    bad = Path("src/labels/train/a.png")
    Image.fromarray(label).save(work / bad)
    prepare_ok(work)
    err = fails("validate", work)
    assert "label ids must be class ids 0..2 (classes.json) or void 255:" in err
    assert f"(source: {bad}): 4 pixels with unknown ids (ids present: 0 1 2 7)" in err
    summary = json.loads((work / "reports/validation/summary.json").read_text())
    assert summary["failed"] == ["label_ids_known"]


def test_empty_val_split_fails_validation(work):
    for path in (work / "src/images/val").iterdir():
        path.unlink()
    for path in (work / "src/labels/val").iterdir():
        path.unlink()
    prepare_ok(work)
    err = fails("validate", work)
    assert "the train and val splits must both have images:" in err
    assert f"{Path('data/prepared/manifest.csv')}: no images in split(s) val" in err


# --------------------------------------------------------------------------- params
def test_unknown_layout_is_a_params_error(work):
    err = fails("prepare", work, data=("data.source=src", "data.layout=coco"))
    assert "params.yaml: invalid params" in err
    assert "data.layout: Input should be 'synthetic', 'segnet' or 'images_labels' (got 'coco')" in err
    assert not (work / "data").exists()


def test_negative_budget_is_a_params_error(work):
    err = fails("prepare", work, "oracle.max_fraction=-0.1")
    assert "params.yaml: invalid params" in err
    assert "oracle.max_fraction: Input should be greater than 0 (got -0.1)" in err
    assert not (work / "data").exists()


# --------------------------------------------------------------------------- unwritable output
def test_data_is_a_file_so_prepared_cannot_be_created(work):
    (work / "data").write_text("not a folder")
    err = fails("prepare", work)
    # names the file in the way (not only the temporary path prepare was writing under it)
    assert err.startswith("howlow prepare: error: data: is a file, but a folder is needed there (writing data/")
    assert (work / "data").read_text() == "not a folder"


def test_prepared_is_a_file_fails_and_is_left_alone(work):
    (work / "data").mkdir()
    (work / "data/prepared").write_text("someone else's file")
    err = fails("prepare", work)
    assert err.startswith("howlow prepare: error: data/prepared: is a file, but a folder is needed there")
    assert (work / "data/prepared").read_text() == "someone else's file"
    assert sorted(p.name for p in (work / "data").iterdir()) == ["prepared"]


def test_unwritable_validation_report_fails_before_great_expectations(work):
    prepare_ok(work)
    (work / "reports").mkdir()
    (work / "reports/validation").write_text("someone else's file")
    err = fails("validate", work)
    assert err.startswith("howlow validate: error: reports/validation: is a file, but a folder is needed there")
    assert len(err.strip().splitlines()) == 1  # no Great Expectations log before it
    assert (work / "reports/validation").read_text() == "someone else's file"


def test_unreachable_dask_scheduler_stops_the_flow_before_any_stage(work):
    """Nothing listens on port 1: one line, exit 2, in seconds, and prepare never ran."""
    env = {**os.environ, "HOWLOW_DASK_ADDRESS": "tcp://127.0.0.1:1"}
    cmd = [sys.executable, str(ROOT / "flows" / "pipeline.py")]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    assert "flows/pipeline.py: error: orchestration.dask_address (or $HOWLOW_DASK_ADDRESS) 'tcp://127.0.0.1:1': " in (
        done.stderr
    )
    assert "no Dask scheduler answers there" in done.stderr
    assert not (work / "data").exists()


def test_a_bool_where_a_number_goes_is_a_params_error(work):
    err = fails("oracle", work, "oracle.pixels_per_round=true")
    assert "oracle.pixels_per_round: Input should be a valid integer (got True)" in err
    assert not (work / "data").exists()


def test_a_bad_cron_stops_serve_before_prefect(work):
    err = fails("serve", work, "orchestration.cron=not a cron")
    assert "orchestration.cron: a cron expression has 5 fields" in err
