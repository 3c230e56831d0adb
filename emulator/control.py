"""The control surface under ``/_emulator``: place calls, read ground truth, set faults.

Tests, the demo and benchmarks drive the emulator through these routes: they stand
for the callers and for the test's view of the truth, so they need no API key, but
they answer only to loopback clients. Errors use the same OpenAI error shape as
``/v1``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.context import EmulatorContext
from emulator.dialer import Dialer, UnknownScenarioError, is_party
from emulator.faults import FaultUpdateError, updated_faults
from emulator.rest import ApiError, json_response, not_found, read_json_object
from emulator.validation import validate_body

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class SipHeader(BaseModel):
    """One extra SIP header for the webhook's ``sip_headers``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    value: str


class PlaceCallRequest(BaseModel):
    """``POST /_emulator/calls``: who calls whom, playing which scenario."""

    model_config = ConfigDict(extra="forbid", strict=True)

    from_party: str = Field(alias="from")
    to: str
    scenario: str
    sip_headers: list[SipHeader] = Field(default_factory=list)

    @field_validator("from_party", "to")
    @classmethod
    def _number_or_uri(cls, value: str) -> str:
        if not is_party(value):
            raise ValueError("expected an E.164 number (+14155550100) or a sip:/tel: URI")
        return value


def _ctx(request: Request) -> EmulatorContext:
    client = request.client
    if client is None or client.host not in LOOPBACK:
        raise ApiError(403, "The emulator control surface answers loopback clients only.")
    ctx: EmulatorContext = request.app.state.ctx
    return ctx


async def place_call(request: Request) -> Response:
    ctx = _ctx(request)
    body = validate_body(PlaceCallRequest, await read_json_object(request))
    dialer: Dialer = request.app.state.dialer
    try:
        call = dialer.place(
            body.from_party,
            body.to,
            body.scenario,
            [header.model_dump() for header in body.sip_headers],
        )
    except UnknownScenarioError:
        known = ", ".join(sorted(ctx.scenarios))
        raise ApiError(
            400,
            f"Unknown scenario '{body.scenario}'. Known scenarios: {known}.",
            param="scenario",
            code="unknown_scenario",
        ) from None
    return json_response({"call_id": call.call_id})


async def list_calls(request: Request) -> Response:
    ctx = _ctx(request)
    state = request.query_params.get("state")
    calls = [
        {"call_id": call.call_id, "state": call.state, "scenario": call.scenario}
        for call in ctx.registry.all()
        if state is None or call.state == state
    ]
    return json_response({"calls": calls})


async def get_call(request: Request) -> Response:
    ctx = _ctx(request)
    call_id = request.path_params["call_id"]
    call = ctx.registry.get(call_id)
    if call is None:
        raise not_found(f"Call '{call_id}'", code="call_not_found")
    include_events = request.query_params.get("events", "1") not in ("0", "false", "no")
    return json_response(call.ground_truth(include_events=include_events))


async def get_ledger(request: Request) -> Response:
    return json_response(_ctx(request).registry.ledger())


async def faults(request: Request) -> Response:
    ctx = _ctx(request)
    if request.method == "POST":
        patch = await read_json_object(request)
        try:
            ctx.faults = updated_faults(ctx.faults, patch)
        except FaultUpdateError as exc:
            raise ApiError(400, str(exc), param=exc.param, code="invalid_fault") from None
    return json_response(ctx.faults.model_dump())


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


ROUTES = [
    Route("/_emulator/calls", place_call, methods=["POST"]),
    Route("/_emulator/calls", list_calls, methods=["GET"]),
    Route("/_emulator/calls/{call_id}", get_call, methods=["GET"]),
    Route("/_emulator/ledger", get_ledger, methods=["GET"]),
    Route("/_emulator/faults", faults, methods=["GET", "POST"]),
    Route("/healthz", healthz, methods=["GET"]),
]
