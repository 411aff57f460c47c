"""The labelling config of a data set's classes, and what the backend reads back from one.

A task shows its image; the person places keypoints labelled with a class (`KeyPointLabels`, smart:
each keypoint asks the backend for a new prediction), and the backend answers with one brush mask per
class (`BrushLabels`). Label names are the class names of classes.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeTree

from ..io import DataError, atomic_write_bytes, read_json
from ..layout import Layout
from ..params import Params

IMAGE, CLICKS, BRUSH = "image", "clicks", "labels"  # the tag names the config gets


def read_classes(path: Path) -> list[dict]:
    """classes.json as [{id, name, color}] with ids 0..K-1 (data/prepared's, checked by `prepare`)."""
    try:
        classes = read_json(path)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `howlow prepare` first (it writes the data set's classes)") from None
    names = [c["name"] for c in classes]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names must be distinct (they are the labels in Label Studio)")
    return classes


def labelling_config(classes: list[dict]) -> str:
    """The XML of the labelling config for these classes."""
    view = Element("View")
    SubElement(view, "Image", name=IMAGE, value=f"${IMAGE}", zoom="true")
    clicks = SubElement(view, "KeyPointLabels", name=CLICKS, toName=IMAGE, smart="true", strokeWidth="2")
    brush = SubElement(view, "BrushLabels", name=BRUSH, toName=IMAGE)
    for c in classes:
        SubElement(clicks, "Label", value=c["name"], background=c.get("color", "#FF0000"), smart="true")
        SubElement(brush, "Label", value=c["name"], background=c.get("color", "#FF0000"))
    return tostring(view, encoding="unicode")


@dataclass(frozen=True)
class ConfigNames:
    """What the backend needs from a project's labelling config: the tag names it answers with and
    the data key of the image."""

    image: str
    data_key: str
    clicks: str
    brush: str


def read_config(xml: str, classes: list[dict]) -> ConfigNames:
    """The names in a labelling config; ValueError (one line) when it lacks a tag or names a label
    that is no class."""
    try:
        root = SafeTree.fromstring(xml)
    except Exception as exc:  # defusedxml's refusals and expat's parse errors alike
        raise ValueError(f"label config is not valid XML ({exc})") from None
    tags: dict[str, Element] = {}
    for el in root.iter():
        tags.setdefault(el.tag.lower(), el)
    missing = [t for t in ("Image", "KeyPointLabels", "BrushLabels") if t.lower() not in tags]
    if missing:
        raise ValueError(f"label config: needs {', '.join(missing)} (write it with `howlow label-studio-config`)")
    known = {c["name"] for c in classes}
    for tag in ("keypointlabels", "brushlabels"):
        unknown = sorted({lb.get("value", "") for lb in tags[tag].iter() if lb.tag.lower() == "label"} - known)
        if unknown:
            raise ValueError(f"label config: {tag} label(s) {unknown} are no class of classes.json {sorted(known)}")
    image = tags["image"]
    value = image.get("value", "")
    if not value.startswith("$") or not image.get("name"):
        raise ValueError('label config: the Image tag needs a name and value="$<data key>"')
    return ConfigNames(
        image.get("name", ""), value[1:], tags["keypointlabels"].get("name", ""), tags["brushlabels"].get("name", "")
    )


def classes_path(layout: Layout) -> Path:
    return layout.prepared / "classes.json"


def write_config(params: Params, layout: Layout) -> dict:
    """`howlow label-studio-config`: the labelling config of data/prepared's classes, to `labelstudio.config`."""
    classes = read_classes(classes_path(layout))
    out = layout.root / params.labelstudio.config
    atomic_write_bytes(out, (labelling_config(classes) + "\n").encode())
    return {"config": str(out), "classes": len(classes)}
