"""An fnhost function in Python: greets on GET, echoes a JSON summary of the body on POST.

It targets the `fnhost:function/function` world, so besides `wasi:http/incoming-handler`
it exports `config` and declares its own settings (only GET and POST are allowed).
"""

import json
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.exports.config import Settings
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class Config(exports.Config):
    def describe(self) -> Settings:
        return Settings(
            background=False,
            paths=[],
            methods=["GET", "POST"],
            timeout_ms=None,
            memory_mb=None,
            schedule=None,
            excluded_paths=[],
            rate_limit=None,
        )


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        query = parse_qs(urlsplit(request.path_with_query() or "/").query, keep_blank_values=True)
        if "spin" in query:
            while True:  # never answers: the host's time budget has to stop it
                pass
        if "loop" in query:  # CPU-bound work, for the engine benchmark (epoch vs fuel)
            h = 0x811C9DC5
            for i in range(int(query["loop"][0])):
                h = ((h ^ (i & 0xFF)) * 0x01000193) & 0xFFFFFFFF
            respond(response_out, 200, "text/plain; charset=utf-8", f"{h}\n".encode())
            return
        if "context" in query:
            text = json.dumps(netlify_context(request), separators=(",", ":"))
            respond(response_out, 200, "application/json", text.encode())
            return
        name = query.get("name", ["world"])[0]

        if isinstance(request.method(), Method_Post):
            body = read_body(request)
            payload = {
                "language": "python",
                "name": name,
                "length": len(body),
                "body": body.decode("utf-8", errors="replace"),
            }
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
            respond(response_out, 200, "application/json", text.encode())
        else:
            text = f"Hello, {name} from Python!\n"
            respond(response_out, 200, "text/plain; charset=utf-8", text.encode())


def netlify_context(request: IncomingRequest) -> dict:
    """Netlify's `context`, from the headers fnhost sets (a client's own `fnhost-*` headers
    never reach a function). `Netlify.env.get(NAME)` is `os.environ[NAME]`: the function's env."""
    headers = {}
    for name, value in request.headers().entries():
        headers.setdefault(name.lower(), value.decode("utf-8", errors="replace"))
    cookies = {}
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            cookies[key] = value.strip('"')
    params = parse_qs(headers.get("fnhost-params", ""), keep_blank_values=True)
    return {
        "ip": headers.get("fnhost-client-ip"),
        "requestId": headers.get("fnhost-invocation-id"),
        "params": {k: v[0] for k, v in params.items()},
        "cookies": cookies,
        "deploy": {"id": headers.get("fnhost-deploy-id")},
        "site": {"name": headers.get("fnhost-site")},
        "geo": {"country": {"code": headers.get("fnhost-geo-country")}, "city": headers.get("fnhost-geo-city")},
        # Not Netlify's: the W3C trace this request belongs to (`traceparent`:
        # version-trace-span-flags), for log lines a collector can join to fnhost's spans.
        "traceId": (headers.get("traceparent", "").split("-") + [None, None])[1],
    }


def read_body(request: IncomingRequest) -> bytes:
    """Reads the whole request body, until the stream is closed."""
    chunks = []
    incoming = request.consume()
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    IncomingBody.finish(incoming)
    return b"".join(chunks)


def respond(response_out: ResponseOutparam, status: int, content_type: str, body: bytes) -> None:
    headers = Fields.from_list([("content-type", content_type.encode()), ("x-language", b"python")])
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with outgoing.write() as stream:
        for i in range(0, len(body), 4096):  # blocking-write-and-flush takes at most 4096 bytes
            stream.blocking_write_and_flush(body[i : i + 4096])
    OutgoingBody.finish(outgoing, None)
