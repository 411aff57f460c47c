"""The Oracle computes what it computed: the same revealed pixels for the same seed as the recorded
ones, on the embedded default and on 4 CamVid frames; a change to what it computes shows here.

tests/data/golden_revealed.json: the Oracle of params.yaml on the first 4 embedded training images,
and the adopted CamVid recipe (studies/budget_camvid) on the first 4 native val frames; 4 images a
batch, one thread. The embedded record is the pre-redesign code's (commit d741384). The CamVid record
was rewritten on 2026-12-02 when whole-image prediction moved to StackedMLP.predict (the same logits
to float rounding, 2.4x faster): the embedded default and 8 CamVid train frames kept every pixel,
these 4 val frames parted from round 7-15 on (1,447 px in all, 1,468 before; CHANGELOG.md).
The same code on an Intel AVX-512 machine (2026-12-03) parts from that record too: float kernels
differ by CPU, so the CamVid record is kept per CPU kind (`revealed_by_cpu`, vendor and torch's
kernel level), the first record serving every other kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, SHARED
from howlow.data import load_prepared, prepare
from howlow.oracle import image_seed, run_oracle_many
from howlow.params import load_params

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_revealed.json").read_text())
CAMVID_RECIPE = ROOT / "studies" / "budget_camvid" / "params.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def revealed(params, split: str, n: int, tmp: Path) -> dict[str, list]:
    prepared = load_prepared(prepare(params, tmp / "prepared", ROOT))
    rows = prepared.split(split)[:n]
    items = [(r["id"], prepared.image(r), prepared.label(r), image_seed(params.oracle.seed, r["id"])) for r in rows]
    out: dict[str, list] = {}
    run_oracle_many(items, prepared.n_classes, params.oracle, 4, lambda key, run: out.__setitem__(key, run.revealed))
    return out


def test_embedded_default_reveals_the_same_pixels(tmp_path):
    got = revealed(load_params(ROOT / "params.yaml"), "train", 4, tmp_path)
    assert got == GOLDEN["embedded"]["revealed"]


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "camvid").is_dir(), reason="needs ../shared/datasets/camvid")
def test_camvid_adopted_recipe_reveals_the_same_pixels(tmp_path):
    params = load_params(
        [ROOT / "params.yaml", CAMVID_RECIPE],
        [f"data.source={SHARED / 'camvid'}", "data.max_train=1", "data.max_val=4"],
    )
    got = revealed(params, "val", 4, tmp_path)
    assert got == GOLDEN["camvid"].get("revealed_by_cpu", {}).get(cpu_kind(), GOLDEN["camvid"]["revealed"])


def cpu_kind() -> str:
    """CPU vendor and torch's kernel level: the CPU kernels (MKL, oneDNN, ATen) round differently on
    different CPUs, and the CamVid runs are long enough for that to change a revealed pixel."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    vendor = next((line.split(":")[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), "")
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"
