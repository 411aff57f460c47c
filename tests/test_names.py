"""One name per number (howlow.names): the committed eval/ files as DVC shows them, and the scheme the
README documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT
from howlow.names import HEADLINE, merge, metric_names, read_metrics, split

README = (ROOT / "README.md").read_text()


def dvc(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dvc_metrics_show_is_a_short_table_of_the_headline_names():
    table = dvc("metrics", "show", "--md", "eval/metrics.json").strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "Path" and len(table) == 3  # header, rule, one row
    names = header[1:]
    sources = read_metrics(ROOT / "eval")["dataset"]
    expected = [f"{b}.{k}" for b in ("oracle", "pseudolabel") for k in HEADLINE[b]]
    expected += [f"dataset.{s}.{k}" for s in sources for k in HEADLINE["dataset"]]
    assert sorted(names) == sorted(expected) and len(names) <= 16
    # each is the name MLflow logs (tracking logs metric_names of the same tree)
    assert set(names) <= set(metric_names(read_metrics(ROOT / "eval")))


def test_the_tree_splits_and_merges_without_losing_a_number():
    tree = read_metrics(ROOT / "eval")
    assert set(tree) == {"oracle", "pseudolabel", "dataset"}
    headline, details = split(tree)
    assert json.loads((ROOT / "eval/metrics.json").read_text()) == headline
    assert json.loads((ROOT / "eval/details.json").read_text()) == details
    assert metric_names(merge(headline, details)) == metric_names(tree)
    names = metric_names(tree)
    # the prefixes that once collided: pseudo-label quality and the network trained on pseudo-labels
    assert "pseudolabel.mean_accuracy" in names and "dataset.pseudo.pixel_accuracy" in names
    assert not [n for n in names if n.split(".")[0] not in ("oracle", "pseudolabel", "dataset")]


def test_the_readme_documents_every_name():
    section = README[README.index("## Names") :]
    section = section[: section.index("\n## ", 4)]
    documented = set(re.findall(r"`([a-z_<>.]+)`", section))
    for name in metric_names(read_metrics(ROOT / "eval")):
        parts = name.split(".")
        generic = ".".join(["dataset", "<source>", *parts[2:]]) if parts[0] == "dataset" else name
        if ".per_class_iou." in generic:
            generic = "dataset.<source>.per_class_iou.<class>"
        assert generic in documented, f"README: Names does not list {generic}"
    for name in ("oracle.revealed_pct", "oracle.revealed_px", "oracle.accuracy", "oracle.seconds"):
        assert name in documented  # an image run's names
