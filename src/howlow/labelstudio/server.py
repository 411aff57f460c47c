"""The Label Studio ML backend: a FastAPI app on uvicorn, speaking the backend protocol.

    GET  /health, /    {"status": "UP", ...}: Label Studio's connection check
    POST /setup        checks the project's labelling config against classes.json; the model version
    POST /predict      tasks (+ params.context.result: the keypoints so far, in interactive mode): one
                       prediction per task, the label map as one RLE brush mask per class
    POST /webhook      annotation events: a submitted annotation's keypoints become its task's clicks

Bad requests get a 4xx with one line saying why ({"error": ...}) and never reach the network; an
update runs in a worker thread, so the server keeps answering while one trains. With
$HOWLOW_LS_BASIC_AUTH=user:password every request needs that HTTP basic auth (Label Studio sends it
when the backend is connected with "Basic Authentication").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..layout import Layout
from ..params import Params, ParamsError
from .clicks import keypoints, to_pixels
from .config import ConfigNames, classes_path, read_classes, read_config
from .images import BadRequest, load_image, local_path
from .masks import brush_results
from .session import Sessions, update

AUTH_ENV = "HOWLOW_LS_BASIC_AUTH"
log = logging.getLogger("howlow.labelstudio")


def model_version(params: Params) -> str:
    """Names the recipe: the Oracle params and steps per update (a changed recipe is another model)."""
    blob = json.dumps([params.oracle.model_dump(mode="json"), params.labelstudio.steps_per_update], sort_keys=True)
    return "howlow-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def _authorised(header: str | None, expected: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return False
    return secrets.compare_digest(given, expected.encode())


async def read_json(request: Request, limit: int) -> dict:
    """The request's JSON object, refused past `limit` bytes without reading further."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BadRequest(413, f"request body over labelstudio.max_request_bytes={limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over labelstudio.max_request_bytes={limit}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"request body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "request body: expected a JSON object")
    return data


def create_app(params: Params, layout: Layout, auth: str | None = None) -> FastAPI:
    """The backend of data/prepared's classes; `auth` "user:password" requires that basic auth."""
    ls = params.labelstudio
    classes = read_classes(classes_path(layout))
    class_ids = {c["name"]: c["id"] for c in classes}
    document_root = (layout.root / ls.document_root).resolve()
    roots = [(layout.root / r).resolve() for r in ls.storage_roots]
    p = params.oracle.model_copy(update={"steps_per_round": ls.steps_per_update})
    version = model_version(params)
    sessions = Sessions(ls.cache_tasks)
    app = FastAPI(title="howlow Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def refused(request: Request, exc: BadRequest) -> JSONResponse:
        log.warning("%s %s: %s %s", request.method, request.url.path, exc.status, exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):
        if auth is not None and not _authorised(request.headers.get("authorization"), auth):
            return JSONResponse(
                {"error": "HTTP basic auth required"}, status_code=401, headers={"WWW-Authenticate": "Basic"}
            )
        return await call_next(request)

    @app.get("/")
    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "model_class": "howlow", "model_version": version, "classes": len(classes)}

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        data = await read_json(request, ls.max_request_bytes)
        _names(data.get("schema"))
        return {"model_version": version}

    @app.post("/webhook")
    async def webhook(request: Request) -> dict:
        data = await read_json(request, ls.max_request_bytes)
        task, annotation = data.get("task"), data.get("annotation")
        if data.get("action") in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED") and isinstance(task, dict):
            if not isinstance(task.get("id"), int) or not isinstance(annotation, dict):
                raise BadRequest(422, "webhook: expected task.id (an integer) and an annotation object")
            points = keypoints(annotation.get("result"), None, class_ids)
            with sessions.lock:  # the next update continues from the keypoints kept (deleted ones gone)
                if (session := sessions.items.get(task["id"])) is not None:
                    session.points = points
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        data = await read_json(request, ls.max_request_bytes)
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest(422, "tasks: expected a non-empty list of task objects")
        names = _names(data.get("label_config"))
        context = (data.get("params") or {}).get("context") if isinstance(data.get("params"), dict) else None
        results = context.get("result") if isinstance(context, dict) else None
        if results is not None and len(tasks) != 1:
            raise BadRequest(422, "tasks: an interactive request (params.context) has exactly one task")
        if results is None:  # not interactive: the network learns from clicks only, so no prediction yet
            return {"results": [{"result": [], "score": 0.0, "model_version": version} for _ in tasks]}
        task = tasks[0]
        if isinstance(task.get("id"), bool) or not isinstance(task.get("id"), int):
            raise BadRequest(422, "tasks[0].id: expected an integer")
        if not isinstance(task.get("data"), dict) or names.data_key not in task["data"]:
            raise BadRequest(422, f"tasks[0].data: expected the image under {names.data_key!r}")
        path = local_path(task["data"][names.data_key], document_root, roots)
        points = keypoints(results, names.clicks, class_ids)  # checked before waiting for the network
        if not points:
            return {"results": [{"result": [], "score": 0.0, "model_version": version}], "model_version": version}
        prediction = await run_in_threadpool(_update, task["id"], path, points, names)
        return {"results": [prediction], "model_version": version}

    def _names(xml: object) -> ConfigNames:
        if not isinstance(xml, str) or not xml.strip():
            raise BadRequest(422, "label config: expected the project's labelling config (XML string)")
        if len(xml) > 1_000_000:
            raise BadRequest(413, "label config: over 1 MB")
        try:
            return read_config(xml, classes)
        except ValueError as exc:
            raise BadRequest(422, str(exc)) from None

    def _update(task: int, path: Path, points: dict, names: ConfigNames) -> dict:
        with sessions.lock:
            session = sessions.get(task, path, lambda f: load_image(f, ls.max_image_pixels), p)
            session.points.update(points)
            clicks = to_pixels(list(session.points.values()), session.shape)
            labels, conf = update(session, clicks, p, len(classes), params.runtime.device)
        return {"result": brush_results(labels, classes, names), "score": float(conf.mean()), "model_version": version}

    app.state.sessions = sessions  # the tests read the backend's own output from here
    return app


@contextlib.contextmanager
def running(app: FastAPI, host: str, port: int) -> Iterator[str]:
    """The app served by uvicorn in a thread while the block runs (benchmarks and tests); its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the backend did not start on {host}:{port}")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def serve(params: Params, layout: Layout) -> dict:
    """`howlow label-studio-backend`: serve the backend on labelstudio.host:port until stopped."""
    import torch
    import uvicorn

    if params.runtime.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("runtime.device: 'cuda' is set but torch sees no CUDA device (use 'cpu')")
    torch.set_num_threads(params.labelstudio.threads)
    auth = os.environ.get(AUTH_ENV) or None
    if auth is not None and ":" not in auth:
        raise ParamsError(f"${AUTH_ENV}: expected user:password")
    host, port = params.labelstudio.host, params.labelstudio.port
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(f"warning: serving on {host} without ${AUTH_ENV}: anyone who reaches it can use it", file=sys.stderr)
    app = create_app(params, layout, auth)
    print(f"howlow Label Studio backend on http://{host}:{port} (model {model_version(params)})", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return {}
