"""A data-set study's annotations, the study's product: one json per training image in
annotations/ (kept in git), and what is read from them: each target's prefix of the clicks, the
budget per sequence, the click schedules that per-image networks replay.

annotations/<id>.json: id, sequence (the file name up to the first '_': CamVid's video sequence),
height and width annotated at, the data and Oracle fingerprint, whether the highest target was
reached, per target the round and click count where it was first reached, the curve [round, clicks,
accuracy, mIoU] and the clicks [y, x, class, round] in reveal order. annotations/index.json lists the
images once the stage has annotated them all.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from ...io import VOID, DataError, atomic_write_bytes, read_json
from ...params import Params
from ...segmentation.datasets import Annotation
from . import target_name

RANDOM_PSEUDO = "random_pseudo"
INDEX = "index.json"


def annotations_dir(root: Path) -> Path:
    return Path(root) / "annotations"


def sequence(image_id: str) -> str:
    """The video sequence (CamVid) or source tile of an image: its file name up to the first '_'."""
    return image_id.split("_", 1)[0]


def target_rounds(curve: list[list], targets: list[float]) -> dict[str, dict]:
    """Per target: the first round whose accuracy reaches it, and the clicks revealed by then; an
    image that never reaches it keeps all its clicks (`reached` false)."""
    out = {}
    for t in sorted(targets):
        hit = next((c for c in curve if c[2] >= t), None)
        point = hit or curve[-1]
        out[target_name(t)] = {"round": point[0], "clicks": point[1], "reached": hit is not None}
    return out


def write_annotation(path: Path, ann: dict) -> None:
    """One key per line, each list on one line: small, and a diff shows which image changed."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in ann.items()]
    atomic_write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode())


def summarise(anns: list[dict], params: Params) -> dict:
    """The budget per target: over all images and per sequence, tuned-on sequences marked."""
    tuned = set(params.study.tuned_on)

    def stats(group: list[dict], t: str) -> dict:
        px = np.array([a["targets"][t]["clicks"] for a in group], float)
        pct = 100 * px / np.array([a["height"] * a["width"] for a in group])
        return {
            "frames": len(group),
            "mean_px": float(px.mean()),
            "median_px": float(np.median(px)),
            "mean_pct": float(pct.mean()),
            "median_pct": float(np.median(pct)),
            "reached": float(np.mean([a["targets"][t]["reached"] for a in group])),
        }

    seqs = sorted({a["sequence"] for a in anns})
    held = [a for a in anns if a["sequence"] not in tuned]
    out: dict = {"images": len(anns), "tuned_on": sorted(tuned), "held_out": [s for s in seqs if s not in tuned]}
    out["targets"] = {}
    for t in (target_name(x) for x in sorted(params.study.targets)):
        out["targets"][t] = {
            "all": stats(anns, t),
            "held_out": stats(held, t) if held else None,
            "by_sequence": {s: stats([a for a in anns if a["sequence"] == s], t) for s in seqs},
        }
    return out


def load_annotations(root: Path, complete: bool = True) -> list[dict]:
    """The study's annotations in index order; `complete=False`: those written so far (a run under way)."""
    out = annotations_dir(root)
    if (out / INDEX).is_file():
        ids = read_json(out / INDEX)["ids"]
    elif complete:
        raise DataError(f"{out / INDEX}: missing; stage annotate makes it (dvc repro)")
    else:
        ids = sorted(p.stem for p in out.glob("*.json"))
    return [read_json(out / f"{i}.json") for i in ids]


def budget_markdown(rep: dict) -> str:
    head = [
        "# Per-image budget",
        "",
        f"{rep['annotated']} of {rep['train_images']} training images annotated ({rep['machine']}).",
        "",
    ]
    return "\n".join(head + budget_table(rep)) + "\n"


def budget_table(rep: dict) -> list[str]:
    """The budget per target: held-out sequences, all, then each sequence (results/budget.json)."""
    lines = [
        "One Oracle run per image to the highest target; a lower target's budget is the clicks up to the round "
        f"that first reached it. Recipe tuned on: {', '.join(rep['tuned_on']) or 'none of these'}; held out: "
        f"{', '.join(rep['held_out']) or 'none'}.",
        "",
        "| target | frames | mean px | median px | mean % | median % | reached |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, v in rep["targets"].items():
        groups = [("held out", v["held_out"]), ("all", v["all"])]
        groups += [
            (f"{seq}{' (tuned on)' if seq in rep['tuned_on'] else ''}", st) for seq, st in v["by_sequence"].items()
        ]
        for name, st in groups:
            if st:
                lines.append(
                    f"| {t} {name} | {st['frames']} | {st['mean_px']:.0f} | {st['median_px']:.0f} | "
                    f"{st['mean_pct']:.3f} | {st['median_pct']:.3f} | {st['reached']:.0%} |"
                )
    return lines


def click_rounds(clicks: np.ndarray, width: int, n_rounds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Round r trains on every click of rounds <= r: (flat indices, classes) per round."""
    out = []
    for r in range(n_rounds):
        sel = clicks[clicks[:, 3] <= r]
        out.append((sel[:, 0] * width + sel[:, 1], sel[:, 2]))
    return out


def random_clicks(ann: dict, label: np.ndarray, seed: int) -> np.ndarray:
    """As many clicks as the Oracle's, at random among valid pixels, with the Oracle's round sizes
    (so every target's prefix has the Oracle's click count there); classes from the label map."""
    clicks = np.array(ann["clicks"], np.int64).reshape(-1, 4)
    rng = np.random.default_rng([seed, zlib.crc32(ann["id"].encode())])
    valid = np.flatnonzero(label.ravel() != VOID)
    pick = valid[rng.permutation(len(valid))[: len(clicks)]]
    ys, xs = np.unravel_index(pick, label.shape)
    return np.stack([ys, xs, label.ravel()[pick], clicks[: len(pick), 3]], 1)


def budget_annotations(root: Path, target: float) -> dict[str, Annotation]:
    """Every annotated image's clicks up to where `target` was first reached (the budget's prefix)."""
    out = {}
    for a in load_annotations(root):
        n = a["targets"][target_name(target)]["clicks"]
        out[a["id"]] = Annotation(np.array(a["clicks"][:n], np.int64).reshape(-1, 4), a["height"], a["width"])
    return out


def reached_fraction(root: Path, target: float) -> float:
    """The share of annotated images whose Oracle run reached `target`."""
    return float(np.mean([a["targets"][target_name(target)]["reached"] for a in load_annotations(root)]))
