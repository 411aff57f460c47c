"""Small I/O helpers (where files live is howlow.layout).

Every output is written to a temporary file in the same folder and then renamed, so a crash never
leaves a half-written file where a later stage (or a resumed run) would read it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

VOID = 255  # canonical void id in prepared labels, whatever the source data set uses


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Bad input data; the message names the file and the rule it breaks."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should follow the umask like open()
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    buf = io.StringIO()
    fieldnames = fieldnames or (list(rows[0]) if rows else [])
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_torch(path: Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# How a source image's mode becomes RGB: palette and 1-bit images are colour (or gray) pictures and
# convert as such; a grayscale image is replicated to three channels. Its channel count is kept for
# validation (rule image_channels), which takes 1 or 3 and refuses an alpha channel or CMYK rather
# than drop information silently. Images of more than 8 bits per channel are refused here: PIL's
# conversion would clip them.
_CHANNELS = {"1": 1, "L": 1, "P": 3, "RGB": 3, "LA": 2, "PA": 4, "RGBA": 4, "RGBa": 4, "CMYK": 4, "YCbCr": 3}


def _open(path: Path, what: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except Image.DecompressionBombError as exc:  # PIL's guard against a tiny file decoding to gigabytes
        raise DataError(f"{path}: too large to read as {what} ({exc})") from None
    except (OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot be read as {what} ({exc})") from None


def read_image_channels(path: Path) -> tuple[np.ndarray, int]:
    """RGB uint8 array (H, W, 3) and the channel count of the file (1 gray, 3 colour, 2 or 4 with alpha)."""
    with _open(path, "an image") as im:
        if im.mode not in _CHANNELS:
            raise DataError(f"{path}: images must have 8 bits per channel, got mode {im.mode} (convert it first)")
        return np.array(im.convert("RGB")), _CHANNELS[im.mode]  # a writable copy (torch.from_numpy warns otherwise)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3)."""
    return read_image_channels(path)[0]


def read_label(path: Path) -> np.ndarray:
    """Single-channel class-id map as uint8 (H, W); RGB colour masks and 16-bit maps are refused."""
    with _open(path, "a label image") as im:
        mode = im.mode
        arr = np.array(im)
    if arr.ndim != 2:
        raise DataError(
            f"{path}: label maps must be single-channel class ids, got {mode} "
            f"with {arr.shape[2]} channels (an RGB colour mask? convert colours to ids first)"
        )
    if mode == "1":  # a 1-bit mask: ids 0/1
        arr = arr.astype(np.uint8)
    # a palette ("P") PNG stores the class id as the palette index, which is what we read
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: label maps must be 8-bit class ids (uint8), got {arr.dtype} ({mode})")
    return arr
