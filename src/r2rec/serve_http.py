"""``r2rec serve``: recommendations as JSON over HTTP (FastAPI + uvicorn).

    r2rec serve --run runs/llara-movielens                       # http://127.0.0.1:8000, model auto
    curl -s localhost:8000/recommend -H 'content-type: application/json' \\
         -d '{"history": ["Heat (1995)", "Ronin (1998)", "Casino (1995)"]}'

Endpoints:

* ``POST /recommend``: body ``{"history": [title | id, ...], "candidates": [title | id, ...]?,
  "max_new_tokens": int?}``; answers with the dict of :meth:`r2rec.serve.RecommendService.recommend`
  (chosen item, reasoning, faithfulness, candidates with their evidence).
* ``GET /health``: ``{"status": "ok", ...}`` with the served run and model.

Errors are JSON ``{"error": "..."}``: 400 for a body that is not JSON, 413 for a body over ``max_body_bytes``
(64 KiB; checked on the Content-Length header and again while a chunked body streams in), 422 for content
that is invalid (wrong types, unknown titles or ids, duplicates, too few or too many candidates, an empty
history). The service has no authentication, so it binds to loopback unless ``--allow-remote`` is given.
One process holds one model; requests are served by a thread pool and generation is serialised by the
service's lock.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime, and the request
# model is local to create_app (kept there so pydantic/fastapi load only when the app is built).
import ipaddress
import json
import logging
import socket

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("r2rec.serve")


def create_app(service, max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app around a :class:`r2rec.serve.RecommendService` (or anything with ``recommend``/``info``)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr
    from starlette.exceptions import HTTPException

    class RecommendRequest(BaseModel):
        # Strict types: a float, a bool or a nested list is an error, not silently coerced into an id.
        model_config = ConfigDict(extra="forbid")
        history: list[StrictStr | StrictInt]
        candidates: list[StrictStr | StrictInt] | None = None
        max_new_tokens: StrictInt | None = None

    app = FastAPI(title="r2rec", description="R2Rec: pick the next item among candidates, with reasoning.")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            return error(400, f"body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})")
        msgs: list[str] = []
        for e in errors:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            msg = f"{loc}: {e.get('msg')}"
            if msg not in msgs:
                msgs.append(msg)
        return error(422, "; ".join(msgs))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed")
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **service.info()}

    # A plain (sync) endpoint: FastAPI runs it in its thread pool, so /health stays responsive during generation.
    @app.post("/recommend")
    def recommend(req: RecommendRequest):
        try:
            return service.recommend(req.history, req.candidates, max_new_tokens=req.max_new_tokens)
        except ValueError as e:
            return error(422, str(e))

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, before it is read into memory.

    A declared Content-Length is checked up front; a body without one (chunked) is counted as it streams and
    cut off at the limit. The overflow is raised as an ``HTTPException(413)`` from ``receive`` because FastAPI
    turns any other exception raised while reading the body into a generic 400.
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self) -> str:
        return f"request body over {self.max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await JSONResponse({"error": "invalid Content-Length header"}, 400)(scope, receive, send)
            if declared > self.max_bytes:
                return await JSONResponse({"error": self._too_large()}, 413)(scope, receive, send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as e:  # raised outside the app's own handlers (e.g. read by a middleware)
            if started:
                raise
            await JSONResponse({"error": str(e.detail)}, e.status_code)(scope, receive, send)


# -- host policy -------------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_host(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"--host {host}: not a loopback address; the service has no authentication, so binding "
                         f"it to a network interface needs --allow-remote (put it behind a proxy that does auth)")


# -- CLI ---------------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    from r2rec.serve import add_service_arguments

    add_service_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow binding to a non-loopback address (the service has no authentication)")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                   help=f"largest accepted request body (default {MAX_BODY_BYTES})")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def run(args) -> int:
    import uvicorn

    from r2rec.serve import service_from_args

    check_host(args.host, args.allow_remote)  # before the (slow) model load
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    service = service_from_args(args)
    log.info(f"[serve] {json.dumps(service.info())}")
    log.info(f"[serve] POST http://{args.host}:{args.port}/recommend  GET /health")
    uvicorn.run(create_app(service, args.max_body_bytes), host=args.host, port=args.port,
                log_level=args.log_level)
    return 0
