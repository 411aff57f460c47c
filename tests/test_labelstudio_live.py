"""The backend with a real Label Studio (its own venv, .venv-ls; scripts/install_label_studio.sh):
Label Studio on 127.0.0.1 with a sqlite store in a temporary folder, a project made with
label-studio-sdk whose tasks are the prepared images (local files storage), the backend connected with
basic auth. Interactive predictions make the round trip; a simulated person annotates every image to
the target; the project's export goes through label-studio-import into the pipeline."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import psutil
import pytest

from conftest import ROOT, free_port, howlow, write_params
from howlow.io import read_image, read_json, read_label
from howlow.labelstudio import studio
from howlow.labelstudio.annotator import keypoint_result
from howlow.labelstudio.masks import label_map
from howlow.labelstudio.server import create_app, running
from howlow.labelstudio.session import open_session, update
from howlow.labelstudio.simulate import annotate_task, submit
from howlow.layout import Layout
from howlow.metrics import confusion, pixel_accuracy
from howlow.oracle import image_seed, run_oracle
from howlow.params import load_params
from test_labelstudio_backend import PROJECT

VENV = ROOT / studio.VENV
AUTH = ("annotator", secrets.token_hex(8))  # the backend's basic auth
LOGIN = ("t@howlow.invalid", secrets.token_hex(8))  # Label Studio's user
CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright cannot download its own browser here
INSTALLED = (VENV / "bin" / "label-studio").is_file()
# CI installs Label Studio and sets this: there a missing install fails instead of skipping
if os.environ.get("HOWLOW_REQUIRE_LABEL_STUDIO") and not INSTALLED:
    raise RuntimeError(f"{VENV}: Label Studio is required here (bash scripts/install_label_studio.sh)")
pytestmark = [
    pytest.mark.labelstudio,
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not INSTALLED, reason="Label Studio is not installed in .venv-ls (bash scripts/install_label_studio.sh)"
    ),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The project folder, the SDK client, a Label Studio project and its ML backend, the backend app
    and both URLs: everything real."""
    from label_studio_sdk import LabelStudio

    folder = tmp_path_factory.mktemp("live")
    write_params(folder, PROJECT)
    for cmd in ("prepare", "label-studio-config"):
        done = howlow(cmd, cwd=folder)
        assert done.returncode == 0, done.stderr
    params = load_params(folder / "params.yaml")
    auth = AUTH
    token = secrets.token_hex(20)
    port = free_port()
    proc = studio.start(VENV, folder, tmp_path_factory.mktemp("ls-data"), port, *LOGIN, token)
    try:
        url = f"http://127.0.0.1:{port}"
        studio.wait_up(url, proc)
        app = create_app(params, Layout(folder), auth=":".join(auth))
        with running(app, "127.0.0.1", free_port()) as backend:
            client = LabelStudio(base_url=url, api_key=token)
            config = (folder / "data/labelstudio/config.xml").read_text()
            project, ml = studio.make_project(
                client, "howlow test", config, folder / "data/prepared/train/images", backend, auth
            )
            yield SimpleNamespace(
                folder=folder, client=client, project=project, ml=ml, app=app, backend=backend, url=url
            )
    finally:
        proc.terminate()
        proc.wait(60)


def tasks_by_image(client, project: int) -> dict[str, object]:
    return {Path(t.data["image"]).stem: t for t in client.tasks.list(project=project)}


def test_label_studio_asks_the_backend_and_gets_its_map(live):
    folder, client, backend = live.folder, live.client, live.backend
    config = (folder / "data/labelstudio/config.xml").read_text()
    images = folder / "data/prepared/train/images"
    # a project of its own: its tasks' clicks stay apart from the simulated person's
    project, ml = studio.make_project(client, "round trip", config, images, backend, AUTH)
    classes = read_json(folder / "data/prepared/classes.json")
    ids = {c["name"]: c["id"] for c in classes}
    tasks = tasks_by_image(client, project)
    image = sorted(tasks)[0]
    label = read_label(folder / f"data/prepared/train/labels/{image}.png")
    clicks = [(5, 7), (40, 50)]
    results = [keypoint_result(y, x, classes[label[y, x]]["name"], label.shape) for y, x in clicks]
    answer = studio.predict_interactive(client, ml, tasks[image].id, results)
    assert "data" in answer, answer
    got = label_map(answer["data"]["result"], ids)
    p = load_params(folder / "params.yaml").oracle.model_copy(update={"steps_per_round": 30})
    path = folder / f"data/prepared/train/images/{image}.png"
    want, _ = update(
        open_session(path, read_image(path), p), np.array([[y, x, label[y, x]] for y, x in clicks]), p, len(ids)
    )
    np.testing.assert_array_equal(got, want)


def test_a_simulated_person_annotates_every_image_and_the_export_feeds_the_pipeline(live):
    """The Oracle's rule clicks through Label Studio until the target; the clicks per image stand
    beside the offline Oracle's; the export, imported, gives the pipeline the maps the person saw."""
    folder, client, project, ml, app = live.folder, live.client, live.project, live.ml, live.app
    params = load_params(folder / "params.yaml")
    classes = read_json(folder / "data/prepared/classes.json")
    tasks = tasks_by_image(client, project)
    seen, report = {}, []
    for image, task in sorted(tasks.items()):
        label = read_label(folder / f"data/prepared/train/labels/{image}.png")
        out = annotate_task(client, ml, task.id, label, classes, params.oracle.target_accuracy, 200, seed=1)
        assert out["reached"], (image, out["curve"][-5:])
        submit(client, task.id, out["result"])
        seen[image] = out["prediction"]
        # Label Studio's webhook (with the backend's basic auth) tells the backend what was submitted
        kept = {r["id"] for r in out["result"] if r["type"] == "keypointlabels"}
        for _ in range(100):
            if set(app.state.sessions.items[task.id].points) == kept:
                break
            time.sleep(0.1)
        assert set(app.state.sessions.items[task.id].points) == kept
        oracle = run_oracle(
            read_image(folder / f"data/prepared/train/images/{image}.png"),
            label,
            len(classes),
            params.oracle,
            image_seed(params.oracle.seed, image),
        )
        report.append((image, out["clicks"], len(oracle.revealed)))
    print("\nimage, simulated person's clicks, offline Oracle's revealed pixels:", report)
    export = b"".join(client.projects.exports.download_sync(project, export_type="JSON"))
    (folder / "data/labelstudio/export.json").write_bytes(export)
    assert len(json.loads(export)) == len(tasks)
    for cmd in ("label-studio-import", "pseudolabel"):
        done = howlow(cmd, cwd=folder)
        assert done.returncode == 0, done.stderr
    totals = read_json(folder / "data/oracle/totals.json")
    assert totals["clicks"] == sum(n for _, n, _ in report)
    for image, pred in seen.items():
        np.testing.assert_array_equal(read_label(folder / f"data/pseudo/{image}.png"), pred)
        label = read_label(folder / f"data/prepared/train/labels/{image}.png")
        assert pixel_accuracy(confusion(pred, label, len(classes))) >= params.oracle.target_accuracy


def test_label_studio_reaches_the_backend_only_with_its_basic_auth(live):
    client, ml = live.client, live.ml
    backend = client.ml.get(ml).url
    assert httpx.get(f"{backend}/health").status_code == 401
    assert client.ml.get(ml).state in ("CO", "PR", "TR")  # connected with the auth it was given


def test_a_person_in_the_browser_places_two_keypoints_and_sees_the_map(live):
    """Headless Chromium (Debian's) in Label Studio's editor: Auto-Annotation on, the smart keypoint
    tool, two classes clicked on the image; each click reaches the backend and its map comes back as a
    suggestion. The screenshot lands in artifacts/ (git-ignored)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    folder, client, app, backend = live.folder, live.client, live.app, live.backend
    config = (folder / "data/labelstudio/config.xml").read_text()
    project, _ = studio.make_project(client, "browser", config, folder / "data/prepared/train/images", backend, AUTH)
    image, task = sorted(tasks_by_image(client, project).items())[0]
    label = read_label(folder / f"data/prepared/train/labels/{image}.png")
    classes = read_json(folder / "data/prepared/classes.json")
    h, w = label.shape
    clicks = [(2, w // 2), (h - 3, w // 2)]  # the top and the bottom of the frame
    url = live.url
    answers = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/user/login/")
        page.fill("input[name=email]", LOGIN[0])
        page.fill("input[name=password]", LOGIN[1])
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{url}/projects/{project}/data?task={task.id}")
        stage = page.locator(".konvajs-content")
        stage.wait_for(timeout=120_000)
        page.get_by_text("Auto-Annotation").click()
        page.locator("button.lsf-tool_smart >> visible=true").first.click()
        for y, x in clicks:
            page.get_by_text(classes[label[y, x]]["name"], exact=True).first.click()  # the keypoint labels' row
            box = stage.bounding_box()
            with page.expect_response(lambda r: "interactive-annotating" in r.url, timeout=60_000) as response:
                page.mouse.click(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)
            answers.append(response.value.json())
        page.get_by_text("suggestion", exact=False).first.wait_for(timeout=30_000)
        (ROOT / "artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "artifacts" / "label-studio-editor.png"))
        browser.close()
    assert all("data" in a for a in answers), answers
    session = app.state.sessions.items[task.id]
    assert [c for *_, c in session.points.values()] == [int(label[y, x]) for y, x in clicks]
    got = label_map(answers[-1]["data"]["result"], {c["name"]: c["id"] for c in classes})
    np.testing.assert_array_equal(got, session.last[0])


def test_label_studio_up_serves_both_on_127_0_0_1_and_stops_with_them(tmp_path):
    """`howlow label-studio-up`: Label Studio and the backend listen on 127.0.0.1 only, the login is
    readable by its owner only and off the command line, and a `kill` stops Label Studio too."""
    write_params(tmp_path, PROJECT)
    assert howlow("prepare", cwd=tmp_path).returncode == 0
    (tmp_path / ".venv-ls").symlink_to(VENV)
    ls_port, backend_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "howlow.cli",
            "label-studio-up",
            f"labelstudio.studio_port={ls_port}",
            f"labelstudio.port={backend_port}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "Ctrl-C" not in line:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line or proc.poll() is None, "label-studio-up ended early"
        login_file = tmp_path / "data/labelstudio/login.json"
        assert login_file.stat().st_mode & 0o077 == 0
        login = read_json(login_file)
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in procs
            for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert {ip for ip, _ in listening} == {"127.0.0.1"} and {ls_port, backend_port} <= {
            port for _, port in listening
        }
        assert not any(login["password"] in " ".join(p.cmdline()) for p in procs)
        assert httpx.get(f"http://127.0.0.1:{backend_port}/health").json()["status"] == "UP"
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        proc.wait(90)
        _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, alive
