"""``fastsr serve``: a web page and an HTTP API that upscale images with models loaded once (issue 22).

:func:`create_app` returns the ASGI app (FastAPI; the ``serve`` extra); ``fastsr serve`` runs it with uvicorn,
or on Ray Serve (``--ray``, one engine per replica, Ray's own proxy in front). The routes:

* ``GET /``: the page (its script and style ship in ``fastsr/serve_page/``; nothing is loaded from elsewhere).
* ``POST /v1/upscale?scale=4&model=NAME&ensemble=1``: the body is an image file (raw, with an ``image/*``
  or ``application/octet-stream`` content type, or the field ``file`` of a multipart form); the reply is the
  upscaled image file, in the format ``fastsr upscale`` would write (the input's, else PNG), byte for byte
  what it writes, with ``X-Fastsr-Model``, ``X-Fastsr-Scale``, ``X-Fastsr-Format`` and ``Server-Timing``.
* ``POST /v1/upscale/stream``: the same, answered as Server-Sent Events: ``progress`` (``tiles_done``,
  ``tiles_total``) after each tile, then ``result`` (the file base64-encoded, with its metadata) or ``error``.
* ``GET /v1/models``, ``GET /healthz``, ``GET /openapi.json`` (no ``/docs``: FastAPI's Swagger UI loads
  from a CDN).

Errors are JSON ``{"error": "..."}``: 400 (not an image, a scale the model lacks, an unknown model, a bad
query), 401 (token missing or wrong), 413 (body or pixel count over the limit), 415 (content type), 503 with
``Retry-After`` (queue full), 500 (anything unexpected; the server stays up). Requests wait in a bounded
queue for the one worker thread that runs the models (:mod:`fastsr.serve_engine`), so the event loop never
runs a model and ``/healthz`` answers while one works.
"""

import argparse
import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import os
import sys
from typing import Any

from .imageio import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_QUEUE", "add_parser", "check_bind", "create_app", "ray_application"]

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # an upload's bytes (a 40-megapixel 8-bit PNG is about 60-120 MB)
DEFAULT_QUEUE = 8  # requests waiting for the worker, beyond the one it runs
_PAGE_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
             "connect-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_EXPOSED = ["X-Fastsr-Model", "X-Fastsr-Scale", "X-Fastsr-Format", "Server-Timing", "Content-Disposition"]
_IMAGE_BODY = {"requestBody": {"required": True, "description": "an image file: its bytes, or the multipart field 'file'",
                               "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                           "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                           "multipart/form-data": {"schema": {
                                               "type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}}}}}
_ERRORS = {code: {"description": text, "content": {"application/json": {"example": {"error": "..."}}}}
           for code, text in ((400, "not an image, a scale the model lacks, an unknown model"),
                              (401, "token missing or wrong"), (413, "body or pixel count over the limit"),
                              (415, "not an image content type"), (503, "queue full (see Retry-After)"))}


def create_app(models: Any = None, *, token: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, queue_size: int = DEFAULT_QUEUE,
               device: Any = None, precision: str | None = None, tile: int | None = None,
               cors_origins: Any = (), max_batch: int = 4):
    """The ASGI app (FastAPI) of ``fastsr serve``; the models are loaded and prepared here, once.

    ``models``: None (the bundled default), one model spec, a list of them or ``{name: spec}``; a spec is
    anything :func:`fastsr.sources.resolve_model` takes, or a ready :class:`fastsr.Upscaler` (used as it is).
    Names: a path's stem, a preset's name, ``default`` for the bundled weights (:func:`fastsr.serve_engine.
    model_names`); the first model is the default. ``token``: when set, ``/v1/*`` needs ``Authorization:
    Bearer <token>``. ``max_pixels``: per input image (None: no limit). ``max_body_bytes``: per upload.
    ``queue_size``: requests that may wait for the worker. ``device``, ``precision``: as for ``Upscaler``.
    ``tile``: the tile side (None: from the memory budget). ``cors_origins``: origins allowed to call the API
    from another site's page (none by default). ``max_batch``: queued images of one model, scale and size
    that the worker upscales in one call (1: one at a time).
    """
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import (
        HTMLResponse,
        JSONResponse,
        Response,
        StreamingResponse,
    )
    from starlette.exceptions import HTTPException

    from ._version import __version__
    from .serve_engine import BodyReader, Engine, Job, ServeError, load_upscalers

    for name, value in (("max_body_bytes", max_body_bytes), ("queue_size", queue_size), ("max_pixels", max_pixels),
                        ("tile", tile), ("max_batch", max_batch)):
        optional = name in ("max_pixels", "tile")
        if not (optional and value is None) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1{' or None' if optional else ''}, got {value!r}")
    if token is not None and not token:
        raise ValueError("token must be a non-empty string or None")
    engine = Engine(load_upscalers(models, device=device, precision=precision), queue_size=queue_size,
                    max_pixels=max_pixels, tile=tile, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        engine.close()

    app = FastAPI(title="fastsr", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="EDSR / MDSR super-resolution. Errors are JSON {\"error\": \"...\"}.")
    app.state.engine = engine
    origins = [cors_origins] if isinstance(cors_origins, str) else list(cors_origins or ())
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=_EXPOSED)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(ServeError)
    async def on_serve_error(request, e: ServeError):
        return error(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request, e: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
                 for err in e.errors()]
        return error(400, "; ".join(parts) or "bad request")

    @app.exception_handler(HTTPException)
    async def on_http_error(request, e: HTTPException):
        return error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(request, e: Exception):
        return error(500, f"internal error ({type(e).__name__}); the server's log has the details")

    def authorized(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not given.strip():
            raise ServeError(401, "missing token: send the header 'Authorization: Bearer <token>'", challenge)
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ServeError(401, "wrong token", challenge)

    async def upload(request: Request) -> bytes:
        """The image bytes, streamed under the byte limit (Content-Length is checked too, not trusted)."""
        reader = BodyReader(request.headers.get("content-type"), max_body_bytes)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise reader.too_large(max_body_bytes)
        engine.check_room()  # a full queue answers before the upload is read
        async for chunk in request.stream():
            reader.feed(chunk)
        return reader.result()

    async def finish(job: Job):
        future = engine.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            job.cancelled.set()  # the client went away: the worker stops at the next tile
            raise

    def reply_headers(reply) -> dict:
        timing = ", ".join(f"{k};dur={v}" for k, v in reply.timings.items())
        return {"X-Fastsr-Model": reply.model, "X-Fastsr-Scale": str(reply.scale), "X-Fastsr-Format": reply.format,
                "Server-Timing": timing, "Content-Disposition": f'inline; filename="{reply.filename}"',
                "Cache-Control": "no-store"}

    scale_query = Query(None, ge=1, description="the scale (default: 4 where the model has it, else its largest)")
    model_query = Query(None, description="a model's name from /v1/models (default: the first)")
    ensemble_query = Query(False, description="x8 self-ensemble (8x slower)")
    v1 = {"dependencies": [Depends(authorized)]}

    @app.post("/v1/upscale", **v1, openapi_extra=_IMAGE_BODY, responses={
        200: {"description": "the upscaled image file", "content": {"image/png": {}, "image/jpeg": {}}}, **_ERRORS})
    async def upscale(request: Request, scale: int | None = scale_query, model: str | None = model_query,
                      ensemble: bool = ensemble_query):
        """Upscale one image; the reply is the image file."""
        name, scale = engine.resolve(model, scale)
        job = Job(await upload(request), name, scale, ensemble)
        reply = await finish(job)
        return Response(reply.body, media_type=reply.media_type, headers=reply_headers(reply))

    @app.post("/v1/upscale/stream", **v1, openapi_extra=_IMAGE_BODY, responses={
        200: {"description": "Server-Sent Events: progress, then result or error",
              "content": {"text/event-stream": {}}}, **_ERRORS})
    async def upscale_stream(request: Request, scale: int | None = scale_query,
                             model: str | None = model_query, ensemble: bool = ensemble_query):
        """Upscale one image, with progress: events ``progress`` ({tiles_done, tiles_total}) and then
        ``result`` ({model, scale, format, media_type, filename, timings, data: the file in base64}) or
        ``error`` ({error, status})."""
        name, scale = engine.resolve(model, scale)
        data = await upload(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, {"tiles_done": done, "tiles_total": total})

        job = Job(data, name, scale, ensemble, on_progress=progress)
        future = asyncio.wrap_future(engine.submit(job))  # QueueFull: a 503 before the stream starts
        return StreamingResponse(_events(future, events, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/v1/models", **v1)
    async def list_models():
        """The models this server has loaded, their scales, device and precision."""
        return {"models": engine.models(), "default": engine.default_model}

    @app.get("/healthz")
    async def healthz():
        """Liveness: answers while a model works."""
        return {"status": "ok", "busy": engine.busy, "queued": engine.queued}

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(_page_file("index.html"), headers=_page_headers())

    @app.get("/page/{name}", include_in_schema=False)
    async def page_asset(name: str):
        if name not in _PAGE_FILES:
            return error(404, "not found")
        return Response(_page_file(name), media_type=_PAGE_FILES[name], headers=_page_headers())

    return app


async def _events(future, events, job):
    """The Server-Sent Events of one streamed upscale (progress coalesced to the latest)."""
    def sse(event: str, data: dict) -> bytes:
        return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

    from .serve_engine import ServeError

    getter = None
    try:
        yield sse("queued", {})
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                break
            latest = getter.result()
            while not events.empty():
                latest = events.get_nowait()
            yield sse("progress", latest)
        try:
            reply = future.result()
        except ServeError as e:
            yield sse("error", {"error": e.message, "status": e.status})
            return
        except Exception as e:  # noqa: BLE001 - Cancelled or anything else: one readable event
            yield sse("error", {"error": f"internal error ({type(e).__name__})", "status": 500})
            return
        yield sse("result", {"model": reply.model, "scale": reply.scale, "format": reply.format,
                             "media_type": reply.media_type, "filename": reply.filename, "timings": reply.timings,
                             "data": base64.b64encode(reply.body).decode("ascii")})
    finally:
        if getter is not None:
            getter.cancel()
        if not future.done():
            job.cancelled.set()


def _page_file(name: str) -> bytes:
    from importlib import resources

    return (resources.files("fastsr") / "serve_page" / name).read_bytes()


def _page_headers() -> dict:
    return {"Content-Security-Policy": _PAGE_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


# ------------------------------------------------------------------------------------------------ Ray Serve


def ray_application(models: Any = None, *, replicas: int | None = None, min_replicas: int | None = None,
                    max_replicas: int | None = None, gpus_per_replica: float = 0, **app_options):
    """:func:`create_app` as a Ray Serve application (``@serve.deployment`` with FastAPI ingress), one engine
    per replica, built on the replica: pass it to ``ray.serve.run``. ``replicas`` (default 1), or
    ``min_replicas`` / ``max_replicas`` for Ray's autoscaling; ``gpus_per_replica`` > 0 puts each replica on
    a GPU (``device`` defaults to CUDA there). Each replica takes ``queue_size`` + 1 requests at a time; Ray
    queues the rest."""
    from ray import serve

    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        raise ValueError("give replicas or min_replicas / max_replicas, not both")
    for name, value, least in (("replicas", replicas, 1), ("min_replicas", min_replicas, 0),
                               ("max_replicas", max_replicas, 1)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    options: dict[str, Any] = {"name": "fastsr",
                               "max_ongoing_requests": app_options.get("queue_size", DEFAULT_QUEUE) + 1,
                               "ray_actor_options": {"num_gpus": gpus_per_replica} if gpus_per_replica else {}}
    if min_replicas is not None or max_replicas is not None:
        low = 1 if min_replicas is None else min_replicas
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": max(low, max_replicas or low)}
    else:
        options["num_replicas"] = replicas or 1

    @serve.deployment(**options)
    @serve.ingress()
    class FastsrServe:
        def __init__(self, models, app_options):
            self._models, self._options = models, app_options

        def __serve_build_asgi_app__(self):
            return create_app(self._models, **self._options)

    return FastsrServe.bind(models, app_options)


# ------------------------------------------------------------------------------------------------ the command


def check_bind(host: str, token: str | None, insecure_no_token: bool = False) -> str | None:
    """The rule for a bind address: a loopback one needs nothing; any other needs a token, or
    ``insecure_no_token`` (then the warning to print is returned). ValueError when refused."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a host name: not known to be local
    if token:
        return None
    if insecure_no_token:
        return (f"serving on {host or 'all interfaces'} with no token: anyone who can reach this port can use "
                "this server")
    raise ValueError(f"refusing to serve on {host or 'all interfaces'} (not a loopback address) without a token: "
                     "pass --token TOKEN (or set FASTSR_TOKEN), or --insecure-no-token")


def add_parser(subparsers) -> None:
    """Add ``fastsr serve`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "serve", help="a web page and HTTP API that upscale images (pip install 'fastsr[serve]')",
        description="Serve the upscaler: the page at /, the API under /v1 (GET /openapi.json describes it). "
                    "Binds 127.0.0.1; another address needs --token (or FASTSR_TOKEN) or --insecure-no-token.")
    p.add_argument("--model", action="append", metavar="M",
                   help="a checkpoint or a preset with bundled weights, served under its file stem; repeat for "
                        "several (default: the bundled weights)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /v1 (default: $FASTSR_TOKEN)")
    p.add_argument("--insecure-no-token", action="store_true", help="allow a non-local --host without a token")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow this origin's pages (CORS)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"refuse larger uploads (default {DEFAULT_MAX_BODY_BYTES:,})")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                   help=f"requests that may wait for the model; more get 503 (default {DEFAULT_QUEUE})")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="as for fastsr upscale")
    p.add_argument("--tile", type=int, help="tile side in input pixels (default: from memory)")
    ray = p.add_argument_group("Ray Serve (pip install 'ray[serve]')")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="run on Ray Serve: a local Ray instance, or the cluster at ADDRESS")
    ray.add_argument("--replicas", type=int, help="replicas, one engine each (default 1)")
    ray.add_argument("--min-replicas", type=int, help="autoscaling: at least this many")
    ray.add_argument("--max-replicas", type=int, help="autoscaling: at most this many")
    ray.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs per replica (default 0: CPU)")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``fastsr serve``; 2 after one line on stderr for anything the user can fix."""
    def fail(message: Any) -> int:
        sys.stderr.write(f"fastsr serve: error: {message}\n")
        return 2

    token = args.token or os.environ.get("FASTSR_TOKEN") or None
    try:
        warning = check_bind(args.host, token, args.insecure_no_token)
    except ValueError as e:
        return fail(e)
    if not 0 <= args.port <= 65535:
        return fail(f"--port must be in 0..65535, got {args.port}")
    ray_options = (args.replicas, args.min_replicas, args.max_replicas)
    if args.ray is None and (any(v is not None for v in ray_options) or args.gpus_per_replica):
        return fail("--replicas, --min-replicas, --max-replicas and --gpus-per-replica go with --ray")
    if warning:
        sys.stderr.write(f"fastsr serve: warning: {warning}\n")
    options = {"token": token, "max_pixels": args.max_pixels or None, "max_body_bytes": args.max_body_bytes,
               "queue_size": args.queue, "device": args.device, "precision": args.precision, "tile": args.tile,
               "cors_origins": args.cors_origin or ()}
    from .weights import DefaultWeightsMissing

    try:
        if args.ray is not None:
            return _run_on_ray(args, options)
        import uvicorn

        app = create_app(args.model or None, **options)
    except ImportError as e:
        return fail(f"{e}; fastsr serve needs its extra: pip install 'fastsr[serve]'"
                    + (" 'ray[serve]'" if args.ray is not None else ""))
    except (FileNotFoundError, ValueError, TypeError, DefaultWeightsMissing, ConnectionError) as e:
        return fail(e)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _run_on_ray(args: argparse.Namespace, options: dict) -> int:
    import ray
    from ray import serve

    from .distributed import parse_address

    ray.init(address=parse_address(args.ray) or "local", include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    # Replicas resolve the models where they run: a local file by its absolute path.
    models = [os.path.abspath(m) if os.path.exists(m) else m for m in args.model or ()] or None
    application = ray_application(models, replicas=args.replicas, min_replicas=args.min_replicas,
                                  max_replicas=args.max_replicas, gpus_per_replica=args.gpus_per_replica, **options)
    serve.run(application, name="fastsr", route_prefix="/", blocking=True)
    return 0
