"""`dvc plots show` of the project's plots (the committed eval/ files), as a person reads them: each
plot once, the Oracle curves a line per image on a log axis, the label sources coloured."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_each_plot_is_drawn_once_and_reads_well():
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json", "dvc.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    plots = shown.get("data", shown)
    # no data file drawn a second time with DVC's default template, no image twice
    assert not [k for k in plots if k.endswith(".csv")], list(plots)
    images = [k for k in plots if k.endswith(".png")]
    assert images and all(len(plots[k]) == 1 for k in images)
    assert all(k.startswith("eval/figures/") for k in images)

    curves = plots["Oracle budget curves (accuracy vs revealed % per image)"][0]["content"]
    assert curves["mark"]["type"] == "line" and curves["encoding"]["color"]["field"] == "image"
    assert curves["encoding"]["x"]["scale"]["type"] == "log"
    assert len({row["image"] for row in curves["data"]["values"]}) > 1  # one line per image
    sources = plots["Val mIoU by label source"][0]["content"]
    assert sources["encoding"]["color"]["field"] == "source"
    # bars of val mIoU: no axis where full labels (100 % annotated) squash the sparse sources at 0.3 %
    assert sources["encoding"]["x"]["field"] == "miou" and sources["encoding"]["y"]["field"] == "source"
    assert {row["source"] for row in sources["data"]["values"]} == {"pseudo", "full", "sparse", "random"}
