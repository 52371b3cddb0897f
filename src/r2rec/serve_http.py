"""``r2rec serve``: recommendations as JSON over HTTP (FastAPI + uvicorn).

    r2rec serve --run runs/llara-movielens                       # http://127.0.0.1:8000, model auto
    curl -s localhost:8000/recommend -H 'content-type: application/json' \\
         -d '{"history": ["Heat (1995)", "Ronin (1998)", "Casino (1995)"]}'

Endpoints (the OpenAPI schema at ``/openapi.json`` and ``/docs`` states every field, limit and error):

* ``POST /recommend``: body ``RecommendRequest`` (``history``, ``candidates``?, ``max_new_tokens``?,
  ``allow_history``?); answers with a :class:`Recommendation` (chosen item, reasoning, faithfulness,
  candidates with their evidence, and for a request without candidates the retrieval that proposed them: which
  model, its top K with scores), the result of :meth:`r2rec.serve.RecommendService.recommend`.
* ``GET /health``: a :class:`Health`: ``{"status": "ok", ...}`` with the served run, model and limits.

Errors are JSON :class:`ErrorBody` ``{"error": "..."}``: 400 for a body that is not JSON or a request whose
candidates are all in its history (nothing left to recommend; ``allow_history: true`` keeps them), 413 for a
body over ``max_body_bytes`` (64 KiB; checked on the Content-Length header and again while a chunked body
streams in), 422 for content that is invalid (wrong types, unknown titles or ids, duplicates, too few or too
many candidates or history items, an empty history), 405 (with ``Allow``) for a method a path does not serve,
503 (with ``Retry-After``) when more than ``max_pending`` requests are already waiting for the model.

Limits: a request carries at most ``max_history_items`` (1,000) history entries, 2 to ``max_candidates`` (50)
candidates, titles of at most 1,000 characters, ``max_new_tokens`` up to ``max_new_tokens_limit`` (1,024),
and a body of at most 64 KiB. There is no per-client rate limit (and no authentication): the service binds to
loopback unless ``--allow-remote`` is given, and a proxy in front should do both. The load it takes is bounded
instead: up to ``max_pending`` (256) requests are worked on at once, beyond that they get 503.

One process holds one model. Requests are served by FastAPI's thread pool (sized to ``max_pending``);
concurrent ones are decoded together in batches of up to ``batch_size`` (8) by the service's micro-batcher
(:class:`r2rec.serve.MicroBatcher`), and each gets the answer it would get alone.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime, and the request
# model is made in create_app, with the service's limits in its schema.
import ipaddress
import json
import logging
import socket
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_TITLE_CHARS = 1000

# -- the answer ------------------------------------------------------------------------------------------


class ItemRef(BaseModel):
    item: int = Field(description="catalogue id")
    title: str = Field(description="catalogue title")


class Candidate(BaseModel):
    item: int = Field(description="catalogue id")
    title: str = Field(description="title as the prompt shows it")
    evidence: float | None = Field(description="train-only chain evidence the prompt ranks candidates by")
    logprob: float | None = Field(
        description="log-probability of this title as the answer (null: not scored or underflowed)"
    )
    chosen: bool = Field(description="this candidate is the answer")


class RetrievedItem(BaseModel):
    item: int = Field(description="catalogue id")
    title: str = Field(description="catalogue title")
    score: float | None = Field(description="the retriever's score (higher = better; null: not finite)")


class Retrieval(BaseModel):
    """Where the candidates of a request without its own came from."""

    model: str = Field(description="the retriever: a classical model (sasrec, gru4rec, transition, ...) or evidence")
    k: int = Field(description="K: how many items retrieval proposes from the whole catalogue")
    source: str = Field(description="loaded (the run's saved fit), fitted (at start-up), or train graph (evidence)")
    items: list[RetrievedItem] | None = Field(
        description="the retrieved items, best first, with their scores (null for evidence); the prompt shows "
        "the prior's top show_candidates of them, listed under candidates",
    )


class Citation(BaseModel):
    user: str | None = Field(
        description="the cited user as written; null = the requesting user (checked against the request's history)"
    )
    title: str = Field(description="the cited title as written")
    items: list[int] = Field(description="catalogue items with that title (empty: unknown title)")
    status: Literal["real", "invented"] = Field(
        description="whether the interaction is in the train graph (or the history)"
    )
    why: str | None = Field(
        description="what is invented: unknown_user, unknown_item, no_interaction, "
        "not_in_history, order; null when real"
    )


class Faithfulness(BaseModel):
    score: float | None = Field(description="real / cited; null when the reasoning cites nothing")
    cited: int = Field(description="interactions the reasoning cites")
    real: int = Field(description="of those, the real ones")
    citations: list[Citation]


class Recommendation(BaseModel):
    """The chosen candidate, the reasoning that led to it and how faithful that reasoning is."""

    model: str = Field(description="model kind served: base, sft, sft-direct or rl")
    item: int | None = Field(description="the chosen catalogue item (null: no valid answer)")
    title: str | None = Field(description="its title")
    reasoning: list[str] = Field(description="the reasoning lines (empty for sft-direct)")
    raw: str = Field(description="the completion as decoded (<think>...</think><answer>...</answer>)")
    faithfulness: Faithfulness
    candidates: list[Candidate] = Field(description="the candidates in prompt order")
    candidates_source: Literal["given", "retrieved", "generated"] = Field(
        description="given by the request; retrieved from the whole catalogue by a classical model; or generated "
        "from the train graph's chain evidence"
    )
    retrieval: Retrieval | None = Field(
        description="which model retrieved the candidates, and its top K (null: candidates given)"
    )
    candidates_removed: list[ItemRef] = Field(description="given candidates left out because they are in the history")
    allow_history: bool = Field(description="whether history items could be recommended")
    candidate_order: str = Field(description="how the prompt ranks the candidates (transition, evidence, frozen)")
    history: list[ItemRef] = Field(description="the history the prompt shows (the last max_history items)")
    history_dropped: int = Field(
        description="older history items not shown to the model (still filtered out of the candidates)"
    )
    context: list[str] = Field(description="interaction chains shown to the model")
    stop: Literal["close", "eos", "length", "none"] = Field(
        description="why the reasoning ended: closing tag, end of sequence, max_new_tokens, or none"
    )
    generated_tokens: int = Field(description="tokens the model chose (reasoning + answer)")
    seconds: float = Field(description="time spent on the request, waiting for a batch included")


class Health(BaseModel):
    status: Literal["ok"]
    run: str = Field(description="the run folder served")
    dataset: str | None
    model: str = Field(description="model kind served")
    checkpoint: dict[str, Any] = Field(description="what was loaded (model, adapter)")
    device: str = Field(description="where the model runs (cpu, cuda)")
    precision: str = Field(description="the precision generation runs in (fp32, bf16, fp16)")
    think: bool = Field(description="the model reasons before answering")
    items: int = Field(description="catalogue size")
    max_candidates: int = Field(description="most candidates a request may give")
    num_candidates: int = Field(description="K: candidates retrieved when a request gives none")
    retriever: dict[str, Any] = Field(description="what retrieves candidates for a request without them")
    max_history: int = Field(description="history items the prompt shows (the newest)")
    max_history_items: int = Field(description="most history entries a request may give")
    max_new_tokens: int = Field(description="default reasoning budget in tokens")
    max_new_tokens_limit: int = Field(description="largest max_new_tokens a request may ask for")
    batch_size: int = Field(description="most requests decoded together")
    batch_wait_ms: float = Field(description="how long a batch is held open for more requests")
    max_pending: int = Field(description="most requests waiting for the model before 503")
    generation_calls: int = Field(description="generation calls made so far (one per batch)")
    requests_generated: int = Field(
        description="requests those calls decoded (over generation_calls: the mean batch size)"
    )


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, naming the field (e.g. history[1]: unknown title ...)")


# -- the request -------------------------------------------------------------------------------------------
# Strict types: a float, a bool or a nested list is an error, not silently coerced into an id.
# A string is validated as a title, anything else as an id: an error names one of the two ("history.1.id: Input
# should be a valid integer"), not both branches of the union.
Title = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS), Tag("title")]
ItemName = Annotated[
    Title | Annotated[StrictInt, Tag("id")],
    Discriminator(lambda v: "title" if isinstance(v, str) else "id"),
    Field(description='a title (matched ignoring case and spacing), a catalogue id, or "id:<n>"'),
]


def create_app(service, max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app around a :class:`r2rec.serve.RecommendService` (or anything with ``recommend``/``info``)."""
    from contextlib import asynccontextmanager

    import anyio.to_thread
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from r2rec.serve import NothingToRecommend, ServiceBusy

    info = service.info()

    class RecommendRequest(BaseModel):
        """The body of ``POST /recommend``, with the service's limits in its schema."""

        model_config = ConfigDict(extra="forbid")
        history: list[ItemName] = Field(
            min_length=1,
            max_length=info["max_history_items"],
            description=f"items the user interacted with, oldest first; the prompt shows the last "
            f"{info['max_history']}, and none of them is recommended unless allow_history is true",
        )
        candidates: Annotated[list[ItemName], Field(min_length=2, max_length=info["max_candidates"])] | None = Field(
            default=None,
            description="the items to choose from (distinct titles); null or absent: the "
            "service retrieves the top K of the whole catalogue (see /health, retriever) and the LLM "
            "re-ranks them. Those in the history are left out.",
        )
        max_new_tokens: Annotated[StrictInt, Field(ge=0, le=info["max_new_tokens_limit"])] | None = Field(
            default=None, description="reasoning budget in tokens (default: the service's)"
        )
        allow_history: StrictBool = Field(
            default=False, description="allow recommending items already in the history (re-consumption)"
        )

    @asynccontextmanager
    async def lifespan(app):
        # Sync endpoints run in anyio's thread pool (40 threads by default): sized so that max_pending requests
        # can wait for the model at once, and the next ones get the batcher's 503 rather than an unbounded wait.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, info["max_pending"] + 1)
        yield

    app = FastAPI(
        title="r2rec", description="R2Rec: pick the next item among candidates, with reasoning.", lifespan=lifespan
    )

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

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
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))  # 405 keeps its Allow

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed")
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/health", response_model=Health)
    async def health() -> dict:  # async: answered on the event loop even while every worker thread waits
        """The served run and model, the request limits, and how many generation calls served how many requests."""
        return {"status": "ok", **service.info()}

    def err(description: str, **extra) -> dict:
        return {"model": ErrorBody, "description": description, **extra}

    # A plain (sync) endpoint: FastAPI runs it in its thread pool; the service batches concurrent requests.
    @app.post(
        "/recommend",
        response_model=Recommendation,
        responses={
            400: err("The body is not JSON, or every candidate is in the history (nothing left to recommend)."),
            413: err(f"The body is over {max_body_bytes} bytes."),
            422: err("Invalid content: wrong types, unknown titles or ids, duplicate candidates, a limit exceeded."),
            503: err(
                "Too many requests are waiting for the model; retry after the given seconds.",
                headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
            ),
        },
    )
    def recommend(req: RecommendRequest):
        """Choose the user's next item among the candidates (given, or retrieved from the whole catalogue), with the
        reasoning that led there and which of the interactions it cites are real. Greedy decoding: the same
        request always gets the same answer, alone or batched with others."""
        try:
            return service.recommend(
                req.history, req.candidates, max_new_tokens=req.max_new_tokens, allow_history=req.allow_history
            )
        except NothingToRecommend as e:
            return error(400, str(e))
        except ValueError as e:
            return error(422, str(e))
        except ServiceBusy as e:
            return error(503, str(e), {"Retry-After": "1"})

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
        raise ValueError(
            f"--host {host}: not a loopback address; the service has no authentication, so binding "
            f"it to a network interface needs --allow-remote (put it behind a proxy that does auth)"
        )


# -- CLI ---------------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    from r2rec.serve import (
        BATCH_SIZE,
        BATCH_WAIT_MS,
        MAX_HISTORY_ITEMS,
        MAX_NEW_TOKENS_LIMIT,
        MAX_PENDING,
        add_service_arguments,
    )

    add_service_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding to a non-loopback address (the service has no authentication)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help=f"largest accepted request body (default {MAX_BODY_BYTES})",
    )
    p.add_argument(
        "--max-history-items",
        type=int,
        default=MAX_HISTORY_ITEMS,
        help=f"most history entries a request may give (default {MAX_HISTORY_ITEMS})",
    )
    p.add_argument(
        "--max-new-tokens-limit",
        type=int,
        default=MAX_NEW_TOKENS_LIMIT,
        help=f"largest max_new_tokens a request may ask for (default {MAX_NEW_TOKENS_LIMIT})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"most concurrent requests decoded together (default {BATCH_SIZE}; 1 = one at a time)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=BATCH_WAIT_MS,
        help=f"how long a batch waits for more requests (default {BATCH_WAIT_MS} ms)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=MAX_PENDING,
        help=f"most requests waiting for the model; more get 503 (default {MAX_PENDING})",
    )
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
    try:
        uvicorn.run(create_app(service, args.max_body_bytes), host=args.host, port=args.port, log_level=args.log_level)
    finally:
        service.close()
    return 0
