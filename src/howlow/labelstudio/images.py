"""A task's image as a local file, read only from the allowed storage roots.

Label Studio serves local files at `/data/local-files/?d=<path relative to its
LOCAL_FILES_DOCUMENT_ROOT>`; the backend reads the same file from disk (`labelstudio.document_root`
is that root) and never fetches a URL: anything else, and any path that leaves the storage roots
(`..`, symlinks, absolute paths), is refused with a `BadRequest` naming the rule.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from ..io import DataError, read_image

LOCAL_FILES = "/data/local-files/"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class BadRequest(ValueError):
    """A request the backend refuses: `status` is its HTTP status, the message says why in one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def local_path(url: object, document_root: Path, roots: list[Path]) -> Path:
    """The file a task's image URL names, if it lies under one of `roots` (resolved, symlinks followed)."""
    if not isinstance(url, str) or not url:
        raise BadRequest(422, "task image: expected a URL string")
    parts = urlsplit(url)
    if parts.path.rstrip("/") + "/" != LOCAL_FILES or parts.fragment:
        raise BadRequest(
            403, f"task image {url[:200]!r}: only Label Studio local files ({LOCAL_FILES}?d=...) are read, no other URL"
        )
    d = parse_qs(parts.query).get("d", [])
    if len(d) != 1 or not d[0] or "\x00" in d[0]:
        raise BadRequest(422, f"task image {url[:200]!r}: expected one non-empty d= path")
    path = (document_root / d[0]).resolve()
    if not any(path.is_relative_to(r) for r in roots):
        raise BadRequest(403, f"task image {d[0][:200]!r}: outside the storage roots the backend may read")
    if path.suffix.lower() not in IMAGE_EXTS:
        raise BadRequest(422, f"task image {d[0][:200]!r}: not an image file ({', '.join(sorted(IMAGE_EXTS))})")
    if not path.is_file():
        raise BadRequest(404, f"task image {d[0][:200]!r}: no such file")
    return path


def load_image(path: Path, max_pixels: int):
    """RGB uint8 (H, W, 3); an image over `max_pixels` is refused before it is decoded."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadRequest(422, f"task image {path.name}: cannot be read ({exc})") from None
    if w * h > max_pixels:
        raise BadRequest(413, f"task image {path.name}: {w}x{h} is over labelstudio.max_image_pixels={max_pixels}")
    try:
        return read_image(path)
    except DataError as exc:
        raise BadRequest(422, f"task image: {exc}") from None
