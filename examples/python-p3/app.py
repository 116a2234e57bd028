"""An fnhost function in Python for WASI 0.3 (`wasi:http/service@0.3.0`).

It targets the `fnhost:function/service` world (`../../wit`): WASI 0.3's HTTP handler, an
`async` function that returns its response while the body is still streaming, plus the
`config` export, through which it declares its own routes (`/py3` and below).

- `GET /py3?name=Ada` -> `Hello, Ada from Python on WASI 0.3!`
- `POST /py3/echo` -> the request body, streamed straight back (with its content type)
- `GET /py3/fetch?url=U&url=V` -> downloads every URL at once (outbound HTTP is denied unless
  `allowed_outbound_hosts` lists it) and streams one line per URL as each finishes:
  `URL STATUS BYTES` or `URL error CODE`
"""

import asyncio
from urllib.parse import parse_qs, urlsplit

import componentize_py_async_support
import wit_world
from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports.config import Settings
from wit_world.imports import client
from wit_world.imports.wasi_http_types import (
    Fields,
    Method_Post,
    Request,
    Response,
    Scheme_Http,
    Scheme_Https,
)


class Config(exports.Config):
    def describe(self) -> Settings:
        return Settings(
            background=None,
            paths=["/py3", "/py3/*"],
            methods=[],
            timeout_ms=None,
            memory_mb=None,
            schedule=None,
            excluded_paths=[],
            rate_limit=None,
        )


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        target = urlsplit(request.get_path_with_query() or "/")
        query = parse_qs(target.query)
        if isinstance(request.get_method(), Method_Post) and target.path.endswith("/echo"):
            kind = [p for p in request.get_headers().copy_all() if p[0] == "content-type"]
            body, trailers = Request.consume_body(request, unit_future())
            return Response.new(Fields.from_list(kind), body, trailers)[0]
        if target.path.endswith("/fetch"):
            tx, rx = wit_world.byte_stream()
            componentize_py_async_support.spawn(fetch_all(query.get("url", []), tx))
            return Response.new(plain(), rx, trailers_future())[0]
        name = query.get("name", ["world"])[0]
        return text(f"Hello, {name} from Python on WASI 0.3!\n")


async def fetch_all(urls: list[str], tx) -> None:
    with tx:
        for done in asyncio.as_completed([fetch(url) for url in urls]):
            await tx.write_all((await done).encode())


async def fetch(url: str) -> str:
    parts = urlsplit(url)
    request = Request.new(Fields(), None, trailers_future(), None)[0]
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    try:
        response = await client.send(request)
    except Err as e:
        return f"{url} error {type(e.value).__name__.removeprefix('ErrorCode_')}\n"
    status = response.get_status_code()
    body = Response.consume_body(response, unit_future())[0]
    size = 0
    with body:
        while not body.writer_dropped:
            size += len(await body.read(16 * 1024))
    return f"{url} {status} {size}\n"


def text(body: str, status: int = 200) -> Response:
    tx, rx = wit_world.byte_stream()

    async def write() -> None:
        with tx:
            await tx.write_all(body.encode())

    componentize_py_async_support.spawn(write())
    response = Response.new(plain(), rx, trailers_future())[0]
    response.set_status_code(status)
    return response


def plain() -> Fields:
    return Fields.from_list([("content-type", b"text/plain; charset=utf-8")])


def trailers_future():
    return wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
        lambda: Ok(None)
    )[1]


def unit_future():
    return wit_world.result_unit_wasi_http_types_error_code_future(lambda: Ok(None))[1]
