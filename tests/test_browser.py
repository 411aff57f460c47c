"""What a person sees in the MLflow and Prefect UIs, checked in a real headless Chromium (Playwright):
the MLflow runs table of a finished default run with the budget's columns and its nested image runs,
and the served Prefect deployment with its schedule. Screenshots go to artifacts/screenshots/
(git-ignored). Skipped, saying why, where Playwright or Chromium is missing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, project_env, run, stop_group

CHROMIUM = Path(os.environ.get("HOWLOW_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / "artifacts" / "screenshots"
BUDGET_METRICS = ("oracle.mean_revealed_pct", "oracle.reached_fraction", "dataset.pseudo.miou", "dataset.full.miou")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (bash scripts/install.sh installs the dev extras)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM}: no Chromium here (apt-get install chromium, or set HOWLOW_CHROMIUM)"
    return None


pytestmark = pytest.mark.slow
needs_browser = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.mark.skipif(not os.environ.get("HOWLOW_REQUIRE_BROWSER"), reason="only where a browser is required (CI)")
def test_the_browser_is_there_where_required():
    """.ci/run sets HOWLOW_REQUIRE_BROWSER: there a missing browser fails rather than skips."""
    assert _missing() is None, _missing()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def service(cmd: list[str], cwd: Path, env: dict, ready: str, log: Path, wait_s: float = 300):
    """A server started as a person starts it; yields once `ready` answers 200; stopped on exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + wait_s
        while not answers(ready):
            assert proc.poll() is None, f"{cmd[0]} ended:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{ready} did not answer within {wait_s} s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield proc
    finally:
        stop_group(proc, signal.SIGTERM)


@contextlib.contextmanager
def chromium_page(width: int = 3200, height: int = 1000):
    """A page of a fresh headless Chromium, wide enough for every budget column (the runs table draws
    only the columns in view); MLflow's assistant panel closed, as after a person's first visit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.add_init_script(
                "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            )
            yield context.new_page()
        finally:
            browser.close()


@needs_browser
def test_mlflow_ui_shows_the_budget_columns_and_the_image_runs(project, tmp_path):
    env = project_env(tmp_path)
    run(["dvc", "repro"], project, env)  # the finished default run (TINY), logged to a temporary store
    logged = json.loads((project / "logs/mlflow_run.json").read_text())
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    parent = mlflow.get_run(logged["run_id"])
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        output_format="list",
    )
    images = {r.info.run_name: r for r in children}
    assert len(images) == 3

    port = free_port()  # README: mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1
    cmd = [
        "mlflow",
        "ui",
        "--backend-store-uri",
        env["MLFLOW_TRACKING_URI"],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with service(cmd, project, env, f"{base}/health", tmp_path / "mlflow-ui.log"), chromium_page() as page:
        page.goto(f"{base}/{logged['ui_page']}", timeout=120_000)
        page.get_by_text(logged["run_name"], exact=True).first.wait_for(timeout=120_000)
        # ag-grid draws a row in several containers (pinned and scrolled columns): find cells by column
        row = page.locator(f"[role=row][row-id='{parent.info.run_id}']")
        row.first.wait_for(timeout=60_000)
        headers = page.locator("[role=columnheader][col-id]").evaluate_all(
            "hs => hs.map(h => h.getAttribute('col-id'))"
        )
        for column in ("tags.`target`", "tags.`seed`", *(f"metrics.`{m}`" for m in BUDGET_METRICS)):
            assert column in headers, (column, headers)
        for name in BUDGET_METRICS:
            shown = row.locator(f"[col-id='metrics.`{name}`']").inner_text().strip()
            assert float(shown) == pytest.approx(parent.data.metrics[name]), (name, shown)
        assert row.locator("[col-id='tags.`target`']").inner_text().strip() == "0.9"
        page.screenshot(path=str(SHOTS / "mlflow-runs.png"))

        # the nested image runs, one click away under their pipeline run (the + beside its name)
        row.locator("[col-id='attributes.`Run Name`'] button").first.click()
        for name in images:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        for child in images.values():
            cell = page.locator(f"[role=row][row-id='{child.info.run_id}'] [col-id='metrics.`oracle.revealed_pct`']")
            shown = cell.inner_text(timeout=60_000).strip()
            assert float(shown) == pytest.approx(child.data.metrics["oracle.revealed_pct"]), shown
        page.screenshot(path=str(SHOTS / "mlflow-image-runs.png"))


@needs_browser
def test_prefect_ui_shows_the_served_deployment_and_its_schedule(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["orchestration"]
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **project_env(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,  # the UI's pages call the API of this server, not the default port
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    serve = [sys.executable, "-m", "howlow.cli", "serve"]
    deployment = f"{api}/deployments/name/howlow-pipeline/{params['deployment']}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with (
        service(server, tmp_path, env, f"{api}/health", tmp_path / "prefect-server.log"),
        service(serve, ROOT, env, deployment, tmp_path / "serve.log"),
        chromium_page() as page,
    ):
        page.goto(f"http://127.0.0.1:{port}/deployments", timeout=120_000)
        page.get_by_text(params["deployment"], exact=True).first.wait_for(timeout=120_000)
        assert params["cron"] == "0 3 * * *"  # the schedule the UI must spell out
        page.get_by_text("At 03:00 AM every day").first.wait_for(timeout=60_000)
        page.get_by_text("howlow-pipeline").first.wait_for(timeout=60_000)  # its flow
        page.screenshot(path=str(SHOTS / "prefect-deployments.png"))
        page.get_by_text(params["deployment"], exact=True).first.click()  # its own page
        page.wait_for_url("**/deployments/deployment/**", timeout=60_000)
        page.get_by_text("At 03:00 AM every day").first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SHOTS / "prefect-deployment.png"))
