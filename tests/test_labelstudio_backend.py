"""The Label Studio ML backend (howlow.labelstudio) on a real uvicorn server, and the import of a
Label Studio export: interactive updates train the Oracle's per-image network on the clicks so far,
warm-started per task; the import replays them into the pipeline's records; bad input gets a 4xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import numpy as np
import psutil
import pytest

from conftest import free_port, howlow, write_params
from howlow.io import read_json, read_label
from howlow.labelstudio.annotator import keypoint_result, next_click
from howlow.labelstudio.config import read_config
from howlow.labelstudio.masks import label_map
from howlow.labelstudio.server import AUTH_ENV, create_app, running
from howlow.labelstudio.session import open_session, update
from howlow.layout import Layout
from howlow.params import load_params

pytestmark = pytest.mark.usefixtures("one_thread")

# synthetic 48x64 frames; one image per engine batch so a replay is bit for bit the backend's run
PROJECT = {"runtime": {"threads": 1, "oracle_batch": 1}, "labelstudio": {"steps_per_update": 30}}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder with the tiny synthetic data set prepared and the labelling config written."""
    folder = tmp_path_factory.mktemp("ls")
    write_params(folder, PROJECT)
    for cmd in ("prepare", "label-studio-config"):
        done = howlow(cmd, cwd=folder)
        assert done.returncode == 0, done.stderr
    return folder


def params(project: Path, *overrides: str):
    return load_params(project / "params.yaml", list(overrides))


@pytest.fixture(scope="module")
def app(project):
    return create_app(params(project), Layout(project))


@pytest.fixture(scope="module")
def backend(app):
    with running(app, "127.0.0.1", free_port()) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def config(project: Path) -> str:
    return (project / "data/labelstudio/config.xml").read_text()


def train_image(project: Path, i: int = 0) -> tuple[str, np.ndarray, dict]:
    """(id, label map, class ids) of the i-th training image."""
    path = sorted((project / "data/prepared/train/images").glob("*.png"))[i]
    classes = read_json(project / "data/prepared/classes.json")
    return (
        path.stem,
        read_label(project / "data/prepared/train/labels" / path.name),
        {c["name"]: c["id"] for c in classes},
    )


def request(project: Path, task: int, image: str, results: list, url: str | None = None) -> dict:
    return {
        "tasks": [
            {"id": task, "data": {"image": url or f"/data/local-files/?d=data/prepared/train/images/{image}.png"}}
        ],
        "label_config": config(project),
        "project": "1.1700000000",
        "params": {"login": None, "password": None, "context": {"result": results}},
    }


def clicks_of(label: np.ndarray, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """n clicks of a simulated person on the ground truth (the Oracle's rule on an all-wrong map)."""
    rng, clicked, out = np.random.default_rng(seed), np.zeros(label.shape, bool), []
    for _ in range(n):
        yx = next_click(None, label, clicked, rng, "random")
        assert yx is not None
        clicked[yx] = True
        out.append(yx)
    return out


def test_config_has_the_classes_as_smart_keypoints_and_brush_labels(project, backend):
    root = ElementTree.fromstring(config(project))
    classes = [c["name"] for c in read_json(project / "data/prepared/classes.json")]
    [kp], [brush] = root.findall("KeyPointLabels"), root.findall("BrushLabels")
    assert kp.get("smart") == "true" and [lb.get("value") for lb in kp] == classes
    assert [lb.get("value") for lb in brush] == classes
    names = read_config(config(project), read_json(project / "data/prepared/classes.json"))
    assert (names.image, names.data_key) == (root.find("Image").get("name"), "image")
    assert backend.get("/health").json()["status"] == "UP"
    r = backend.post("/setup", json={"project": "1.1", "schema": config(project), "hostname": "", "access_token": ""})
    assert r.status_code == 200 and r.json()["model_version"].startswith("howlow-")


def test_an_update_returns_the_scored_label_map_as_brush_masks(project, backend):
    image, label, ids = train_image(project, 1)
    names = {v: k for k, v in ids.items()}
    clicks = clicks_of(label, 2, seed=1)
    results = [keypoint_result(y, x, names[label[y, x]], label.shape) for y, x in clicks]
    r = backend.post("/predict", json=request(project, 101, image, results))
    assert r.status_code == 200, r.text
    [prediction] = r.json()["results"]
    assert {b["type"] for b in prediction["result"]} == {"brushlabels"} and 0 < prediction["score"] <= 1
    got = label_map(prediction["result"], ids)
    # the backend's direct output: a fresh session on the same clicks
    p = params(project).oracle.model_copy(update={"steps_per_round": 30})
    path = project / f"data/prepared/train/images/{image}.png"
    from howlow.io import read_image

    want, _ = update(
        open_session(path, read_image(path), p), np.array([[y, x, label[y, x]] for y, x in clicks]), p, len(ids)
    )
    np.testing.assert_array_equal(got, want)
    assert all(got[y, x] == label[y, x] for y, x in clicks)


def test_updates_warm_start_and_the_import_replays_them_into_the_pipeline(project, backend):
    """One click per update, sent alone as Label Studio's editor sends it, each training the network
    where the previous update left it; the export's clicks imported and pseudo-labelled give the very
    map the person saw last."""
    image, label, ids = train_image(project, 0)
    names = {v: k for k, v in ids.items()}
    rng, clicked, pred, results = np.random.default_rng(3), np.zeros(label.shape, bool), None, []
    maps, yx = [], []
    for _ in range(5):
        y, x = next_click(pred, label, clicked, rng, "error_center")
        clicked[y, x] = True
        yx.append((y, x))
        results.append(keypoint_result(y, x, names[label[y, x]], label.shape))
        r = backend.post("/predict", json=request(project, 7, image, results[-1:]))
        assert r.status_code == 200, r.text
        pred = label_map(r.json()["results"][0]["result"], ids)
        maps.append(pred)
    export = [
        {
            "id": 7,
            "data": {"image": f"/data/local-files/?d=data/prepared/train/images/{image}.png"},
            "annotations": [
                {"id": 1, "was_cancelled": True, "result": []},
                {"id": 2, "was_cancelled": False, "updated_at": "2026-12-03T08:00:00Z", "result": results},
            ],
        },
        {"id": 8, "data": {"image": "/data/local-files/?d=data/prepared/train/images/other.png"}, "annotations": []},
    ]
    (project / "data/labelstudio/export.json").write_text(json.dumps(export))
    done = howlow("label-studio-import", cwd=project)
    assert done.returncode == 0, done.stderr
    record = read_json(project / f"data/oracle/{image}.json")
    assert record["revealed"] == [[y, x, int(label[y, x]), i] for i, (y, x) in enumerate(yx)]
    totals = read_json(project / "data/oracle/totals.json")
    assert totals["clicks"] == 5
    assert read_json(project / "data/oracle/label_studio.json")["tasks"] == [image]
    assert totals["mean_revealed_pct"] == pytest.approx(100 * 5 / label.size)
    assert [c["revealed"] for c in record["curve"]] == [1, 2, 3, 4, 5]
    assert record["curve"][-1]["accuracy"] == pytest.approx(float((maps[-1] == label)[label != 255].mean()))
    done = howlow("pseudolabel", cwd=project)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_label(project / f"data/pseudo/{image}.png"), maps[-1])


def test_an_update_trains_only_the_new_clicks_rounds_and_replays_when_a_click_changed(project, app, backend):
    image, label, ids = train_image(project, 1)
    names = {v: k for k, v in ids.items()}
    clicks = clicks_of(label, 5, seed=5)
    results = [keypoint_result(y, x, names[label[y, x]], label.shape) for y, x in clicks]
    p = params(project).oracle.model_copy(update={"steps_per_round": 30})
    from howlow.io import read_image

    path = project / f"data/prepared/train/images/{image}.png"

    def ask(rs: list) -> np.ndarray:
        r = backend.post("/predict", json=request(project, 55, image, rs))
        assert r.status_code == 200, r.text
        return label_map(r.json()["results"][0]["result"], ids)

    def steps() -> list[float]:
        return app.state.sessions.items[55].resume["adam"]["t"][0].tolist()

    def fresh(kept: list) -> np.ndarray:
        return update(open_session(path, read_image(path), p), np.array([[y, x, label[y, x]] for y, x in kept]), p, 6)[
            0
        ]

    ask(results[:2])  # an API caller may send every keypoint so far
    assert steps() == [2 * 30]  # two clicks, two rounds
    last = ask(results[:4])
    assert steps() == [4 * 30]  # warm-started: the two new clicks' rounds only
    np.testing.assert_array_equal(ask(results[3:4]), last)
    assert steps() == [4 * 30]  # a keypoint it has already: nothing trained
    # the person deletes the second keypoint and submits: Label Studio's webhook says what is kept
    kept = results[:1] + results[2:4]
    r = backend.post(
        "/webhook", json={"action": "ANNOTATION_UPDATED", "task": {"id": 55}, "annotation": {"result": kept}}
    )
    assert r.status_code == 200
    got = ask(results[4:])  # the next keypoint: every round anew, without the deleted one
    assert steps() == [4 * 30]
    np.testing.assert_array_equal(got, fresh([clicks[0], *clicks[2:]]))
    moved = {**results[0], "value": {**results[0]["value"], "x": results[0]["value"]["x"] / 2}}
    y0, x0 = clicks[0][0], int(moved["value"]["x"] * label.shape[1] / 100)
    moved["value"]["keypointlabels"] = [names[label[y0, x0]]]
    got = ask([moved])  # the first keypoint moved: its id keeps its place, every round anew
    assert steps() == [4 * 30]
    np.testing.assert_array_equal(got, fresh([(y0, x0), *clicks[2:]]))


BAD = [
    # (what, how to make the request from a good one, status, words of the message)
    ("not JSON", lambda body: b"{tasks:", 400, "not JSON"),
    ("not an object", lambda body: b"[1, 2]", 422, "JSON object"),
    ("no tasks", lambda body: {**body, "tasks": []}, 422, "tasks"),
    (
        "two tasks in one interactive request",
        lambda body: {**body, "tasks": body["tasks"] * 2},
        422,
        "exactly one task",
    ),
    ("no label config", lambda body: {**body, "label_config": ""}, 422, "label config"),
    ("a label config that is not XML", lambda body: {**body, "label_config": "<View"}, 422, "not valid XML"),
    (
        "a label config with entities (billion laughs)",
        lambda body: {**body, "label_config": '<!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><View>&b;</View>'},
        422,
        "not valid XML",
    ),
    (
        "a label config with a label that is no class",
        lambda body: {**body, "label_config": body["label_config"].replace('value="sky"', 'value="cloud"', 1)},
        422,
        "'cloud'",
    ),
    ("an unknown label", lambda body: _keypoint(body, keypointlabels=["cloud"]), 422, "unknown label 'cloud'"),
    ("two labels on one keypoint", lambda body: _keypoint(body, keypointlabels=["sky", "road"]), 422, "one label"),
    ("a keypoint outside the image", lambda body: _keypoint(body, x=150.0), 422, "value.x"),
    ("a keypoint at NaN", lambda body: _keypoint(body, y="NaN"), 422, "value.y"),
    ("a result that is no object", lambda body: _results(body, [3]), 422, "context.result[0]"),
    ("path traversal", lambda body: _image(body, "/data/local-files/?d=../../../../etc/passwd"), 403, "storage roots"),
    ("an absolute path", lambda body: _image(body, "/data/local-files/?d=/etc/hostname"), 403, "storage roots"),
    ("a URL to fetch", lambda body: _image(body, "http://127.0.0.1:1/x.png"), 403, "no other URL"),
    ("a file URL", lambda body: _image(body, "file:///etc/passwd"), 403, "no other URL"),
    ("an uploaded file", lambda body: _image(body, "/data/upload/1/x.png"), 403, "no other URL"),
    ("two d= paths", lambda body: _image(body, "/data/local-files/?d=a.png&d=b.png"), 422, "one non-empty d="),
    (
        "a missing image",
        lambda body: _image(body, "/data/local-files/?d=data/prepared/train/images/nope.png"),
        404,
        "no such file",
    ),
    (
        "a file that is no image",
        lambda body: _image(body, "/data/local-files/?d=data/prepared/manifest.csv"),
        422,
        "not an image",
    ),
    (
        "an image that is no image",
        lambda body: _image(body, "/data/local-files/?d=data/prepared/bad.png"),
        422,
        "cannot be read",
    ),
    (
        "a symlink out of the roots",
        lambda body: _image(body, "/data/local-files/?d=data/prepared/escape.png"),
        403,
        "storage roots",
    ),
    (
        "a task id that is no number",
        lambda body: {**body, "tasks": [{**body["tasks"][0], "id": "7"}]},
        422,
        "tasks[0].id",
    ),
]


def _results(body: dict, results: list) -> dict:
    return {**body, "params": {"context": {"result": results}}}


def _keypoint(body: dict, **value) -> dict:
    kp = body["params"]["context"]["result"][0]
    return _results(body, [{**kp, "value": {**kp["value"], **value}}])


def _image(body: dict, url: str) -> dict:
    return {**body, "tasks": [{"id": 9, "data": {"image": url}}]}


@pytest.mark.parametrize("what, change, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_saying_why_and_the_backend_goes_on(project, backend, what, change, status, words):
    (project / "data/prepared/bad.png").write_bytes(b"not a png")
    outside = project / "secret.png"
    outside.write_bytes((project / "data/prepared/train/images").glob("*.png").__next__().read_bytes())
    if not (project / "data/prepared/escape.png").is_symlink():
        (project / "data/prepared/escape.png").symlink_to(outside)
    image, label, _ = train_image(project, 2)
    good = request(project, 9, image, [keypoint_result(3, 4, "sky", label.shape)])
    body = change(json.loads(json.dumps(good)))
    r = backend.post("/predict", content=body) if isinstance(body, bytes) else backend.post("/predict", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert backend.get("/health").status_code == 200
    assert backend.post("/predict", json=good).status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"action": "ANNOTATION_CREATED", "task": {"id": [1]}, "annotation": {"result": []}}, 422),
        ({"action": "ANNOTATION_UPDATED", "task": {"id": 1}, "annotation": "x"}, 422),
        (
            {"action": "ANNOTATION_UPDATED", "task": {"id": 1}, "annotation": {"result": [{"type": "keypointlabels"}]}},
            422,
        ),
        ({"action": "PROJECT_UPDATED", "project": {"id": 1}}, 200),
    ],
)
def test_webhooks_are_checked_too(backend, body, status):
    r = backend.post("/webhook", json=body)
    assert r.status_code == status, r.text
    assert backend.get("/health").status_code == 200


def test_oversized_requests_and_images_get_413(project):
    app = create_app(
        params(project, "labelstudio.max_request_bytes=20000", "labelstudio.max_image_pixels=1000"), Layout(project)
    )
    image, label, _ = train_image(project, 0)
    body = request(project, 1, image, [keypoint_result(3, 4, "sky", label.shape)])
    with running(app, "127.0.0.1", free_port()) as url, httpx.Client(base_url=url, timeout=60) as client:
        big = {**body, "padding": "x" * 30000}
        r = client.post("/predict", json=big)
        assert r.status_code == 413 and "max_request_bytes=20000" in r.json()["error"]
        chunks = (json.dumps(big)[i : i + 1000].encode() for i in range(0, 40000, 1000))  # no Content-Length
        r = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = client.post("/predict", json=body)  # 48 x 64 = 3072 px > 1000
        assert r.status_code == 413 and "max_image_pixels=1000" in r.json()["error"]


def test_an_update_in_progress_does_not_block_other_requests(project):
    app = create_app(params(project, "labelstudio.steps_per_update=4000"), Layout(project))
    image, label, _ = train_image(project, 2)
    body = request(project, 1, image, [keypoint_result(3, 4, "sky", label.shape)])
    with running(app, "127.0.0.1", free_port()) as url, httpx.Client(base_url=url, timeout=120) as client:
        slow = threading.Thread(target=lambda: client.post("/predict", json=body))
        slow.start()
        time.sleep(0.5)
        assert client.get("/health").status_code == 200
        assert client.post("/predict", json=_image(body, "http://127.0.0.1:1/x.png")).status_code == 403
        assert slow.is_alive(), "the update ended before the other requests: make it longer"
        slow.join()


def test_basic_auth_when_asked_for(project):
    app = create_app(params(project), Layout(project), auth="annotator:s3cret")
    with running(app, "127.0.0.1", free_port()) as url:
        assert httpx.get(f"{url}/health").status_code == 401
        assert httpx.get(f"{url}/health", auth=("annotator", "wrong")).status_code == 401
        r = httpx.get(f"{url}/health", headers={"Authorization": "Basic !!!"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"
        assert httpx.get(f"{url}/health", auth=("annotator", "s3cret")).status_code == 200


def test_the_backend_command_listens_on_127_0_0_1_only_and_asks_for_auth(project):
    port = free_port()
    env = {**os.environ, AUTH_ENV: "annotator:s3cret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "howlow.cli", "label-studio-backend", f"labelstudio.port={port}"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", auth=("annotator", "s3cret")).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.1)
        listening = {
            c.laddr.ip for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    "export, words",
    [
        (None, "not found"),
        ({"not": "a list"}, "a list of tasks"),
        (
            [{"id": 1, "data": {"image": "/data/local-files/?d=x/elsewhere.png"}, "annotations": [{"result": []}]}],
            "no training image",
        ),
        ("unknown label", "unknown label 'cloud'"),
    ],
)
def test_a_bad_export_stops_the_import_with_one_line_and_nothing_written(project, tmp_path, export, words):
    image, label, _ = train_image(project, 0)
    if export == "unknown label":
        export = [
            {
                "id": 1,
                "data": {"image": f"/data/local-files/?d=a/{image}.png"},
                "annotations": [{"result": [keypoint_result(1, 1, "cloud", label.shape)]}],
            }
        ]
    path = tmp_path / "export.json"
    if export is not None:
        path.write_text(json.dumps(export))
    before = sorted(p.name for p in (project / "data/oracle").glob("*")) if (project / "data/oracle").is_dir() else []
    done = howlow("label-studio-import", f"labelstudio.export={path}", cwd=project)
    assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    after = sorted(p.name for p in (project / "data/oracle").glob("*")) if (project / "data/oracle").is_dir() else []
    assert after == before


def write_export(folder: Path, n_clicks: list[int]) -> None:
    """data/labelstudio/export.json of `folder` (a prepared project): a task per training image,
    image i annotated with n_clicks[i] clicks on its ground truth."""
    export = []
    for i, n in enumerate(n_clicks):
        image, label, ids = train_image(folder, i)
        names = {v: k for k, v in ids.items()}
        results = [keypoint_result(y, x, names[label[y, x]], label.shape) for y, x in clicks_of(label, n, seed=i)]
        url = f"/data/local-files/?d=data/prepared/train/images/{image}.png"
        export.append({"id": i, "data": {"image": url}, "annotations": [{"id": i, "result": results}]})
    (folder / "data/labelstudio").mkdir(parents=True, exist_ok=True)
    (folder / "data/labelstudio/export.json").write_text(json.dumps(export))


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_on_imported_clicks_to_an_mlflow_run(tmp_path):
    """`dvc repro labelstudio/dvc.yaml`: import -> pseudolabel -> train -> evaluate -> track on a
    person's clicks, the budget in eval/metrics.json and MLflow; a new export reruns the import and
    what follows it, never the Oracle."""
    from conftest import copy_project, project_env, run

    env = project_env(tmp_path)
    folder = copy_project(tmp_path / "project", env)
    assert howlow("prepare", cwd=folder, env=env).returncode == 0  # the images Label Studio shows
    write_export(folder, [12, 12, 12])
    out = run(["dvc", "repro", "labelstudio/dvc.yaml"], folder, env).stdout
    for stage in ("prepare", "import", "pseudolabel", "train", "evaluate", "track"):
        assert f"Running stage 'labelstudio/dvc.yaml:{stage}'" in out, out
    assert "Running stage 'oracle'" not in out and not (folder / "data/oracle").exists()
    from howlow.names import read_metrics

    metrics = read_metrics(folder / "labelstudio/eval")  # headline (metrics.json) and details (details.json)
    assert metrics["oracle"]["clicks"] == 36 and metrics["oracle"]["mean_revealed_px"] == 12
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = read_json(folder / "labelstudio/logs/mlflow_run.json")["run_id"]
    got = client.get_run(run_id)
    assert got.data.metrics["oracle.clicks"] == 36
    assert got.data.tags["annotator"] == "label-studio" and got.info.run_name.startswith("synthetic-label-studio-s")
    assert "target" not in got.data.tags
    assert client.get_registered_model("howlow-synthetic-label-studio-pseudo").name
    # one more click on the first image: the import and what follows rerun, the images do not
    write_export(folder, [13, 12, 12])
    again = run(["dvc", "repro", "labelstudio/dvc.yaml"], folder, env).stdout
    assert "Running stage 'labelstudio/dvc.yaml:import'" in again
    assert "Running stage 'labelstudio/dvc.yaml:prepare'" not in again
    assert read_metrics(folder / "labelstudio/eval")["oracle"]["clicks"] == 37
    status = run(["dvc", "status", "labelstudio/dvc.yaml"], folder, env).stdout
    assert "up to date" in status, status
    # the budget table lists the person's runs with no target
    done = howlow("compare", cwd=folder, env=env)
    assert done.returncode == 0, done.stderr
    from howlow.io import read_csv

    rows = [r for r in read_csv(folder / "reports/compare/budgets.csv") if r["strategy"] == "label-studio"]
    assert len(rows) == 2  # one per repro
    assert all(
        r["run"].startswith("synthetic-label-studio-s") and float(r["dataset.pseudo.annotated_pct"]) > 0 for r in rows
    )
