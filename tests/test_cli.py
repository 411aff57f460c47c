"""The `howlow` command: bad params and bad data give one clear error, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def howlow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "howlow.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture
def workdir(tmp_path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path


@pytest.mark.parametrize(
    "override, key, rule",
    [
        (
            "oracle.strategy=best",
            "oracle.strategy",
            "Input should be 'random', 'random_error', 'error_center', 'margin', 'entropy' or 'pixelpick'",
        ),
        ("oracle.target_accuracy=1.5", "oracle.target_accuracy", "less than or equal to 1"),
        ("oracle.pixels_per_round=-3", "oracle.pixels_per_round", "greater than or equal to 1"),
        ("orcale.seed=1", "orcale", "unknown key"),
    ],
)
def test_invalid_params_exit_2_naming_file_and_key(workdir, override, key, rule):
    done = howlow("prepare", override, cwd=workdir)
    assert done.returncode == 2
    assert "params.yaml: invalid params" in done.stderr and key in done.stderr and rule in done.stderr
    assert "Traceback" not in done.stderr
    assert not (workdir / "data").exists()


def test_bad_data_exit_2_naming_file(workdir):
    src = workdir / "mydata"
    (src / "train").mkdir(parents=True)
    done = howlow("prepare", f"data.source={src}", "data.layout=segnet", cwd=workdir)
    assert done.returncode == 2
    assert f"{src / 'classes.json'}: classes.json is missing" in done.stderr
    assert not (workdir / "data").exists()


def test_stage_before_its_inputs_says_what_to_run(workdir):
    done = howlow("oracle", cwd=workdir)
    assert done.returncode == 2 and "run the prepare stage first" in done.stderr


def test_prepare_writes_the_embedded_default(workdir):
    done = howlow("prepare", "data.synthetic.n_train=2", "data.synthetic.n_val=1", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (workdir / "data/prepared/train/images").iterdir()) == [
        "syn_train_000.png",
        "syn_train_001.png",
    ]


def test_cuda_without_a_gpu_is_a_params_error(workdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for stage in ("oracle", "train"):
        done = howlow(stage, "runtime.device=cuda", cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert "runtime.device" in done.stderr and "Traceback" not in done.stderr


def test_params_lists_every_key_with_its_value_and_meaning(workdir):
    done = howlow("params", "oracle.lr=0.01", cwd=workdir)
    assert done.returncode == 0, done.stderr
    lines = {
        line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith(("{", "}", " "))
    }
    from howlow.params import flatten, load_params

    keys = flatten(load_params(workdir / "params.yaml").to_dict())
    assert set(keys) <= set(lines)
    assert lines["oracle.lr"].split()[1] == "0.01"  # the override applied
    assert "pixel accuracy, void excluded" in lines["oracle.target_accuracy"]  # params.yaml's comment
