"""A real Label Studio, started from its own venv (.venv-ls) and driven through label-studio-sdk:
what `howlow label-studio-up`, the tests and the simulated annotator use.

Label Studio runs on 127.0.0.1 with a sqlite store in a folder of its own, serves the project's
files as local files (LOCAL_FILES_DOCUMENT_ROOT = the project folder, the backend's
`labelstudio.document_root`), and may call a backend on this machine (BANNED_SUBNETS).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ..io import DataError, read_json, write_json
from ..layout import Layout
from ..params import Params
from .config import classes_path, labelling_config, read_classes

VENV = Path(".venv-ls")
# Label Studio refuses URLs on reserved networks (SSRF protection), loopback included, and connecting
# a backend also registers its /webhook through that check whatever ML_BLOCK_LOCAL_IP says. So the
# default list is replaced by the same list without loopback: a backend on 127.0.0.1 is allowed,
# private and link-local networks stay refused.
BANNED_SUBNETS = (
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.0.2.0/24,"
    "192.88.99.0/24,192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,203.0.113.0/24,224.0.0.0/4,"
    "233.252.0.0/24,240.0.0.0/4,255.255.255.255/32,::/128,::ffff:0:0/96,64:ff9b::/96,100::/64,"
    "2001:db8::/32,2002::/16,fc00::/7,fe80::/10,ff00::/8"
)


def start(
    venv: Path, document_root: Path, data_dir: Path, port: int, user: str, password: str, token: str
) -> subprocess.Popen:
    """`label-studio start` of `venv` on 127.0.0.1:port, serving local files under `document_root`,
    its database and media in `data_dir`, with this user and (legacy) API token; its output in
    data_dir/label-studio.log."""
    exe = venv / "bin" / "label-studio"
    if not exe.is_file():
        raise DataError(f"{exe}: missing; run bash scripts/install_label_studio.sh")
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve()),
        "ML_BLOCK_LOCAL_IP": "false",  # the backend is on this machine
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": BANNED_SUBNETS,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "COLLECT_ANALYTICS": "false",
        # the login in the environment, not on the command line where `ps` shows it to every user
        "LABEL_STUDIO_USERNAME": user,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
    }
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    cmd += ["--host", f"http://127.0.0.1:{port}", "--data-dir", str(data_dir)]
    cmd += ["--database", str(data_dir / "label_studio.sqlite3"), "--log-level", "WARNING"]
    cmd += ["--enable-legacy-api-token"]
    log = open(data_dir / "label-studio.log", "ab")  # noqa: SIM115 (the process keeps it)
    return subprocess.Popen(cmd, cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 600) -> None:
    """Until Label Studio answers /health (its first start migrates the database: a minute or two)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Label Studio exited with status {proc.returncode} before answering")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"Label Studio did not answer at {url} within {timeout:.0f} s")


def make_project(
    client, title: str, config: str, images: Path, backend_url: str, auth: tuple[str, str] | None = None
) -> tuple[int, int]:
    """A project with this labelling config, one task per image of `images` (a local files storage:
    an absolute folder under LOCAL_FILES_DOCUMENT_ROOT), connected to the backend for interactive
    predictions (with HTTP basic auth when `auth`); its id and the ML backend's id."""
    project = client.projects.create(title=title, label_config=config)
    storage = client.import_storage.local.create(
        project=project.id, path=str(images.resolve()), regex_filter=r".*\.(png|jpe?g)$", use_blob_urls=True
    )
    client.import_storage.local.sync(id=storage.id)
    extra = {"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]} if auth else {}
    ml = client.ml.create(url=backend_url, project=project.id, is_interactive=True, title="howlow", **extra)
    if auth:  # Label Studio made a webhook to <backend>/webhook; it sends no basic auth unless told to
        header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        for hook in client.webhooks.list(project=str(project.id)):
            if hook.url.rstrip("/") == backend_url.rstrip("/") + "/webhook":
                client.webhooks.update(hook.id, headers={"Authorization": header})
    return project.id, ml.id


def predict_interactive(client, ml_id: int, task: int, results: list[dict]) -> dict:
    """What Label Studio's editor asks when a smart keypoint is placed: the backend's prediction for the
    task given the keypoints so far (Label Studio's answer {"data": prediction} or {"errors": [...]})."""
    raw = client.ml.with_raw_response.predict_interactive(id=ml_id, task=task, context={"result": results})
    return raw._response.json()  # the SDK types this answer as None; its body is the prediction


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def up(params: Params, layout: Layout) -> dict:
    """`howlow label-studio-up`: the backend and Label Studio (.venv-ls) on 127.0.0.1, a project of
    data/prepared's training images connected to the backend, until Ctrl-C. Label Studio keeps its
    database in data/labelstudio/server; the login and the project are in data/labelstudio/login.json
    (made once, readable by you only), so a second run opens the same project."""
    import secrets

    from label_studio_sdk import LabelStudio

    from .server import AUTH_ENV, create_app, running

    images = layout.prepared / "train" / "images"
    if not images.is_dir():
        raise DataError(f"{images}: missing; run `howlow prepare` first")
    root = layout.root.resolve()
    state_dir = root / "data" / "labelstudio"
    login_file = state_dir / "login.json"
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops Label Studio too, as Ctrl-C does
    if login_file.is_file():
        login = read_json(login_file)
    else:
        login = {
            "user": "annotator@howlow.local",
            "password": secrets.token_urlsafe(12),
            "token": secrets.token_hex(20),
        }
    port = params.labelstudio.studio_port
    url = f"http://127.0.0.1:{port}"
    proc = start(
        root / VENV,
        root / params.labelstudio.document_root,
        state_dir / "server",
        port,
        login["user"],
        login["password"],
        login["token"],
    )
    try:
        wait_up(url, proc)
        auth = os.environ.get(AUTH_ENV) or None
        app = create_app(params, layout, auth)
        host, backend_port = params.labelstudio.host, params.labelstudio.port
        with running(app, host, backend_port) as backend:
            if "project" not in login:
                user, _, password = (auth or "").partition(":")
                login["project"], login["ml_backend"] = make_project(
                    LabelStudio(base_url=url, api_key=login["token"]),
                    f"howlow {params.dataset_name}",
                    labelling_config(read_classes(classes_path(layout))),
                    images,
                    backend,
                    (user, password) if auth else None,
                )
                write_json(login_file, login)
                login_file.chmod(0o600)
            print(f"Label Studio: {url}/projects/{login['project']} (user {login['user']}, password in {login_file})")
            print(
                f"backend: {backend}; export the annotations as JSON to {params.labelstudio.export}, "
                "then `howlow label-studio-import`. Ctrl-C stops both.",
                flush=True,
            )
            while proc.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()
        proc.wait(60)
    return {}
