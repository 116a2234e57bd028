"""A background fnhost function in Python: counts the words of `{"text": ...}`.

A plain `wasi:http/proxy` component; fnhost runs it in the background because its name ends
in `-background`, so the caller gets 202 at once and this response becomes the payload of
the outcome record. `{"fail": true}` makes it answer 500, which fnhost counts as a failed
attempt and retries when the function has `retry_on_5xx = true` in fnhost.toml (as in
`examples/fnhost.toml`); the `fnhost-attempt` header counts the attempts.
"""

import json

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        with request.headers() as headers:
            attempt = header(headers, "fnhost-attempt")
            invocation = header(headers, "fnhost-invocation-id")
        try:
            job = json.loads(read_body(request))
        except ValueError:
            respond(response_out, 400, "text/plain; charset=utf-8", b"body is not JSON\n")
            return
        if not isinstance(job, dict):
            respond(response_out, 400, "text/plain; charset=utf-8", b"body is not a JSON object\n")
            return
        if job.get("fail") is True:
            respond(response_out, 500, "text/plain; charset=utf-8", b"failed on request\n")
            return

        result = {
            "words": len(str(job.get("text", "")).split()),
            "attempt": int(attempt) if attempt and attempt.isdigit() else 1,
            "invocation": invocation,
        }
        respond(response_out, 200, "application/json", json.dumps(result).encode())


def header(headers: Fields, name: str) -> str | None:
    """The first value of a request header, or None."""
    values = headers.get(name)
    return values[0].decode("utf-8", errors="replace") if values else None


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
    headers = Fields.from_list([("content-type", content_type.encode())])
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with outgoing.write() as stream:
        for i in range(0, len(body), 4096):  # blocking-write-and-flush takes at most 4096 bytes
            stream.blocking_write_and_flush(body[i : i + 4096])
    OutgoingBody.finish(outgoing, None)
