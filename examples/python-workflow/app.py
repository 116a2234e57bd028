"""A durable workflow in Python: an order is charged once, waits for its shipping event,
settles, then asks for a review — through the `fnhost:function/steps` interface that the
`fnhost:function/function` world imports (`wit_world.imports.steps`).

`POST ?order=ID[&settle_ms=N]`. A background function (its `config` export says so): the
caller gets 202 at once. Each call to `sleep_until` / `wait_for_event` that is not due yet ends
the attempt; fnhost runs the invocation again from the top when its time or event comes, and
`get` answers the steps already recorded, so nothing below is done twice:

    fnhost send order.shipped --key ID --data TRACKING   # wakes the waiting order
"""

import json
import time
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.exports.config import Settings
from wit_world.imports import steps
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

DAY_MS = 86_400_000


class Config(exports.Config):
    def describe(self) -> Settings:
        return Settings(
            background=True,
            paths=[],
            methods=["POST"],
            timeout_ms=None,
            memory_mb=None,
            schedule=None,
            excluded_paths=[],
            rate_limit=None,
        )


def step(name: str, work) -> str:
    """Step `name`: its recorded result, else `work()` done now and recorded (UTF-8 text)."""
    recorded = steps.get(name)
    if recorded is not None:
        return recorded.decode()
    result = work()
    steps.put(name, result.encode())  # raises componentize_py_types.Err past max_steps/size
    return result


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        query = parse_qs(urlsplit(request.path_with_query() or "/").query)
        order = query.get("order", ["?"])[0]
        settle_ms = int(query.get("settle_ms", [str(7 * DAY_MS)])[0])
        print(f"workflow run {order}")

        def charge() -> str:
            print(f"charged {order}")  # the side effect: once per invocation
            return f"receipt-{order}"

        receipt = step("charge", charge)
        tracking = steps.wait_for_event("shipped", "order.shipped", order, 14 * DAY_MS)
        if tracking is None:
            respond(response_out, 200, {"order": order, "receipt": receipt, "shipped": False})
            return
        steps.sleep_until("settle", int(time.time() * 1000) + settle_ms)

        def review() -> str:
            print(f"review requested for {order} ({tracking.decode()})")
            return "sent"

        step("review", review)
        body = {"order": order, "receipt": receipt, "tracking": tracking.decode(), "review": "sent"}
        respond(response_out, 200, body)


def respond(response_out: ResponseOutparam, status: int, payload: dict) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with outgoing.write() as stream:
        stream.blocking_write_and_flush(body)
    OutgoingBody.finish(outgoing, None)
