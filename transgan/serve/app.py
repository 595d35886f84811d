"""The ASGI app of `transgan serve` (Starlette): routes, request limits, JSON errors, the demo page."""

from __future__ import annotations

import contextlib
import json
import time
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from transgan import __version__
from transgan.serve.batcher import DynamicBatcher
from transgan.serve.model import RequestError, ServedModel, grid, pick_format

RAW_TYPES = ("image/", "application/octet-stream")


def create_app(model: ServedModel, max_batch: int = 8, max_wait_ms: float = 10.0) -> Starlette:
    """The service for one model: POST /translate or /generate, GET /info, /health and the demo page at /."""
    translate_batcher = DynamicBatcher(lambda key, items: model.run_translate(items), max_batch, max_wait_ms)
    generate_batcher = DynamicBatcher(lambda key, items: model.run_generate(items), max_batch, max_wait_ms)
    batcher = generate_batcher if model.kind == "sampler" else translate_batcher
    started = time.time()
    in_flight = 0

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await batcher.start()
        yield
        # The server stops taking requests and lets those in flight finish before this runs; the batcher
        # then runs whatever is still queued before the engine thread stops.
        await batcher.close()
        close = getattr(model.engine, "close", None)  # gives back what the engine holds
        if close is not None:
            close()

    async def translate(request: Request) -> Response:
        nonlocal in_flight
        if model.kind != "translator":
            raise RequestError(422, f"this model is a {model.kind}: use POST /generate")
        unknown = set(request.query_params) - {"format"}
        if unknown:
            raise RequestError(422, f"unknown parameter(s) {', '.join(sorted(unknown))}: /translate takes format")
        image_format = pick_format(request.query_params.get("format"), request.headers.get("accept"))
        data, fields = await _read_image(request, model.limits.max_body_bytes)
        image_format = pick_format(fields.get("format"), None) if fields.get("format") else image_format
        item = await run_in_threadpool(model.decode, data)
        in_flight += 1
        try:
            output, batch_size = await batcher.submit(model.translate_key(item), item)
        finally:
            in_flight -= 1
        body, media_type = await run_in_threadpool(model.encode, output, image_format)
        return Response(body, media_type=media_type, headers={"X-Batch-Size": str(batch_size)})

    async def generate(request: Request) -> Response:
        nonlocal in_flight
        if model.kind != "sampler":
            raise RequestError(422, f"this model is a {model.kind}: use POST /translate")
        params = {**await _read_params(request, model.limits.max_body_bytes), **request.query_params}
        image_format = pick_format(params.get("format"), request.headers.get("accept"))
        noise, labels, n = await run_in_threadpool(model.parse_generate, params)
        in_flight += 1
        try:
            images, batch_size = await batcher.submit(("generate",), (noise, labels), weight=n)
        finally:
            in_flight -= 1
        nrow = params.get("nrow")
        columns = int(nrow) if str(nrow or "").isdigit() and int(nrow) > 0 else min(n, 8)
        body, media_type = await run_in_threadpool(model.encode, grid(images, columns), image_format)
        return Response(body, media_type=media_type, headers={"X-Batch-Size": str(batch_size), "X-Images": str(n)})

    async def info(request: Request) -> JSONResponse:
        limits = model.limits
        return JSONResponse(
            {
                "model": model.describe(),
                "transgan_version": __version__,
                "routes": ["POST /generate"] if model.kind == "sampler" else ["POST /translate"],
                "limits": {
                    "max_body_bytes": limits.max_body_bytes,
                    "max_side": limits.max_side,
                    "min_side": model.min_side,
                    "max_samples": limits.max_samples,
                },
                "batching": {
                    "max_batch": max_batch,
                    "max_wait_ms": max_wait_ms,
                    **batcher.stats.as_dict(),
                },
                "in_flight": in_flight,
                "uptime_s": round(time.time() - started, 1),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    async def script(request: Request) -> Response:
        return Response(_static("demo.js"), media_type="text/javascript")

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/demo.js", script, methods=["GET"]),
        Route("/translate", translate, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/info", info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    handlers = {RequestError: _request_error, HTTPException: _http_error, Exception: _internal_error}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes: this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit} bytes: this server takes at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_image(request: Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes of a raw body (image/* or application/octet-stream) or of a multipart upload."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "multipart/form-data" and not content_type.startswith(RAW_TYPES):
        raise RequestError(
            415,
            f"Content-Type {content_type}: send the image's bytes (image/* or application/octet-stream) "
            "or a multipart/form-data upload",
        )
    body = await _read_body(request, limit)
    if content_type != "multipart/form-data":
        return body, {}
    form = await _parse_multipart(request, body)
    uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    if not uploads:
        raise RequestError(422, "the multipart upload holds no file: add the image as a file field (e.g. 'image')")
    named = [upload for key, upload in form.multi_items() if key == "image" and isinstance(upload, UploadFile)]
    data = await (named or uploads)[0].read()
    await form.close()
    return data, fields


async def _parse_multipart(request: Request, body: bytes):
    async def stream():
        yield body

    try:
        return await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
    except MultiPartException as error:
        raise RequestError(422, f"malformed multipart upload ({error.message})") from error


async def _read_params(request: Request, limit: int) -> dict[str, Any]:
    """/generate's parameters from a JSON object, a form, or nothing (then only the query string)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, limit)
    if not body.strip():
        return {}
    if content_type in ("application/json", ""):
        try:
            params = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(422, f"the body is not valid JSON ({error})") from error
        if not isinstance(params, dict):
            raise RequestError(422, 'the JSON body must be an object like {"class": "7", "seed": 0, "n": 16}')
        return {key: value for key, value in params.items() if value is not None}
    if content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        return dict(parse_qsl(body.decode("latin-1")))
    raise RequestError(415, f"Content-Type {content_type}: send parameters as JSON, a form or a query string")


def _static(name: str) -> str:
    return resources.files("transgan.serve").joinpath("static", name).read_text(encoding="utf-8")


async def _request_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestError)
    return JSONResponse({"error": error.message, "status": error.status}, status_code=error.status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail, "status": error.status_code}, status_code=error.status_code)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # Starlette re-raises after this answer, so the traceback reaches the server's log, never the client.
    return JSONResponse({"error": "internal error: see the server log", "status": 500}, status_code=500)
