"""The HTTP API over one Translator: routes, limits, errors as JSON, and the page at `/`.

    POST /v1/translate  {"text": "..."} or {"texts": [...]}, optional beam, nbest, alpha,
                        attention → the translation(s) and their scores
    GET  /v1/model      languages, architecture, vocabulary, checkpoints and their sha256
    GET  /health        200 once the model is loaded (503 while draining)
    GET  /metrics       Prometheus text format
    GET  /              a page to try the model, with attention heatmaps

Every error is JSON, `{"error": "what was wrong and what to do"}`, with a 4xx status for bad
input (never a 500): an over-large body, too many sentences or too costly a request
(`serve.max_request_cost`) 413, invalid JSON or UTF-8 400, wrong fields or values 422, a
missing or wrong API key 401, a full queue 503 with Retry-After.
No route reads or writes a file a request names.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt import __version__
from nmt.config import ServeConfig, config_to_dict
from nmt.errors import NmtError
from nmt.serve.middleware import Guard, error_response
from nmt.serve.prometheus import ServerMetrics
from nmt.serve.scheduler import QueueFull, Scheduler, ShuttingDown, line_cost
from nmt.serve.schemas import (
    ErrorBody,
    Hypothesis,
    ModelInfo,
    TextResponse,
    TextsResponse,
    Translated,
    TranslateRequest,
)
from nmt.translate import DecodeOptions, Prepared, Result, Translator, no_translation

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 422, 503)}


def create_app(
    translator: Translator, cfg: ServeConfig, api_key: str | None = None
) -> tuple[FastAPI, Scheduler]:
    """The ASGI app and its scheduler, whose `run` the caller runs (on the main thread); the
    app closes the scheduler when it shuts down, once its requests are answered."""
    metrics = ServerMetrics()
    scheduler = Scheduler(translator, cfg.max_wait_ms, cfg.max_queue, metrics.events())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        scheduler.close()

    app = FastAPI(
        title="nmt translation server",
        version=__version__,
        description="Translation with a GRU encoder-decoder trained by `nmt train`.",
        lifespan=lifespan,
    )
    app.state.draining = False  # set on SIGTERM, while the requests in flight finish
    app.add_middleware(Guard, cfg=cfg, api_key=api_key, metrics=metrics)
    _error_handlers(app)
    page = resources.files("nmt.serve").joinpath("static/index.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health", responses={503: {"model": ErrorBody}})
    async def health(request: Request) -> JSONResponse:
        """Ready: the model is loaded (the server listens only once it is); 503 while the
        server drains its last requests before exiting."""
        if request.app.state.draining:
            return error_response(503, "the server is shutting down")
        return JSONResponse({"status": "ok"})

    @app.get("/v1/model", response_model=ModelInfo, responses=ERRORS)
    async def model() -> ModelInfo:
        return model_info(translator)

    @app.get("/metrics", response_class=Response, responses=ERRORS)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post(
        "/v1/translate",
        response_model=TextResponse | TextsResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    async def translate(body: TranslateRequest, request: Request) -> Response | dict:
        """Translate `text` (answered as one object) or `texts` (answered as a list, in
        order); sentences of concurrent requests are decoded in shared batches."""
        start = time.perf_counter()
        texts = [body.text] if body.text is not None else body.texts or []
        items, options = _prepare(translator, cfg, body, texts)
        try:
            job = scheduler.submit(items, options)
        except QueueFull as full:
            return error_response(
                503,
                f"the server is busy ({scheduler.depth} sentences queued); retry after "
                f"{full.retry_after} s",
                headers={"Retry-After": str(full.retry_after)},
            )
        try:
            results = await _answer_or_disconnect(job, request, scheduler)
        except ShuttingDown:
            return error_response(
                503,
                "the server shut down before this request was translated (serve.drain_seconds "
                "ran out); send it again",
                headers={"Retry-After": "1"},
            )
        if results is None:
            return Response(status_code=499)  # nobody is left to read it
        answers = [
            _translated(result, item, body.attention, line)
            for line, (result, item) in enumerate(zip(results, items), 1)
        ]
        elapsed = time.perf_counter() - start
        metrics.latency.observe(elapsed)
        ms = round(1000 * elapsed, 1)
        if body.text is not None:
            return {**answers[0].model_dump(exclude_none=True), "time_ms": ms}
        return {"translations": [a.model_dump(exclude_none=True) for a in answers], "time_ms": ms}

    return app, scheduler


def _prepare(
    translator: Translator, cfg: ServeConfig, body: TranslateRequest, texts: list[str]
) -> tuple[list[Prepared], DecodeOptions]:
    """The request's lines cut to `max_chars` and prepared, and its search options; a
    request over the limits is an HTTP error."""
    if len(texts) > cfg.max_sentences:
        raise HTTPException(
            413,
            f"{len(texts)} sentences in one request; the limit is {cfg.max_sentences} "
            "(serve.max_sentences): split the request",
        )
    if body.beam is not None and body.beam > cfg.max_beam:
        raise HTTPException(422, f"beam {body.beam} is over this server's limit, {cfg.max_beam}")
    batch_tokens = cfg.max_batch_tokens or translator.cfg.decode.batch_tokens
    try:
        options = translator.decode_options(
            body.beam, body.nbest, body.alpha, None, batch_tokens, body.attention
        )
    except NmtError as err:
        raise HTTPException(422, err.what) from None  # its fix names CLI flags
    try:
        items = translator.prepare([t[: cfg.max_chars] for t in texts])
    except NmtError as err:  # text that is not Unicode (a lone surrogate): the client's fault
        raise HTTPException(422, f"invalid request: {err.what}") from None
    for line, (text, item) in enumerate(zip(texts, items), 1):
        if len(text) > cfg.max_chars:
            item.warnings.insert(
                0,
                f"line {line} has {len(text)} characters; cut to the first {cfg.max_chars} "
                "(serve.max_chars)",
            )
    _check_cost(cfg, items, options)
    return items, options


def _check_cost(cfg: ServeConfig, items: list[Prepared], options: DecodeOptions) -> None:
    """A 413 for a request over `serve.max_request_cost`: refused at once, rather than
    decoded for longer than a drain or a proxy's timeout lasts."""
    cost = sum(line_cost(item, options.beam) for item in items if item.ids)
    if cost > cfg.max_request_cost:
        parts = -(-cost // cfg.max_request_cost)
        raise HTTPException(
            413,
            f"this request costs {cost:,} source subwords x beam ({options.beam}); the limit is "
            f"{cfg.max_request_cost:,} (serve.max_request_cost): split it into {parts} "
            "requests or ask for a smaller beam",
        )


async def _answer_or_disconnect(job, request: Request, scheduler: Scheduler) -> list | None:
    """The job's results, or None if the client disconnects first (its lines are dropped)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.future in done:
        return job.future.result()
    scheduler.cancel(job)
    job.future.cancel()
    return None


def _translated(result: Result, item: Prepared, attention: bool, line: int) -> Translated:
    """One sentence's answer; `line` counts the request's sentences from 1, as warnings do."""
    warnings = list(item.warnings)
    if not result.hypotheses:
        warnings.append(no_translation(line))
        return Translated(translation="", score=0.0, warnings=warnings)
    best = result.hypotheses[0]
    answer = Translated(
        translation=best.text, score=round(best.score, 6), warnings=warnings or None
    )
    if len(result.hypotheses) > 1:
        answer.nbest = [
            Hypothesis(translation=h.text, score=round(h.score, 6)) for h in result.hypotheses
        ]
    if attention and best.attention is not None:
        answer.source_pieces = result.source_pieces
        answer.target_pieces = [*best.pieces, "</s>"]
        answer.attention = [[round(x, 4) for x in row] for row in best.attention]
    return answer


def model_info(translator: Translator) -> ModelInfo:
    cfg, first = translator.cfg, translator.models[0]
    src, tgt = translator.languages
    return ModelInfo(
        source_language=src,
        target_language=tgt,
        arch=cfg.model.arch,
        parameters=sum(p.numel() for p in first.parameters()),
        vocabulary={
            src: translator.src_tokenizer.vocab_size,
            tgt: translator.tgt_tokenizer.vocab_size,
        },
        checkpoints=translator.checkpoints,
        protected_spans=translator.protector.patterns or None,
        device=str(translator.runtime.device),
        precision=translator.runtime.precision,
        config=config_to_dict(cfg),
    )


def _error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": ...}`: invalid JSON is a 400, invalid fields a 422."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            where = e["loc"][-1] if e.get("loc") else "?"
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(400, f"the body is not valid JSON: {reason} at byte {where}")
        fields = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or "body",
                "problem": e["msg"].removeprefix("Value error, "),
            }
            for e in errors
        ]
        summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        return error_response(422, f"invalid request: {summary}", detail=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
