"""Call control over REST: ``/v1/realtime/calls`` and its accept, reject, refer and hangup.

Each handler checks the call exists and is still reachable (404 otherwise: unknown, the
caller gave up ringing, or it already ended), validates the body (400 naming the
field), refuses to decide a call that was already answered or declined (404, as the
real API answers a redelivered webhook's accept), and only then changes ground truth.
So a bad or repeated request changes nothing. Successful control requests answer 200
with an empty body, as the real API does.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.context import EmulatorContext
from emulator.player import start_player
from emulator.rest import (
    ApiError,
    conflict,
    empty_ok,
    guarded,
    not_found,
    read_body,
    read_json_object,
)
from emulator.session_schema import sets_audio_format, validate_session, validate_session_json
from emulator.state import EmulatedCall
from emulator.validation import validate_body


class RejectRequest(BaseModel):
    """``RealtimeCallRejectRequest``: an optional SIP status code (default 603 Decline)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status_code: Annotated[int, Field(ge=300, le=699)] = 603


class ReferRequest(BaseModel):
    """``RealtimeCallReferRequest``: where to transfer the caller (SIP ``Refer-To``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    target_uri: str

    @field_validator("target_uri")
    @classmethod
    def _sip_or_tel(cls, value: str) -> str:
        scheme, _, rest = value.partition(":")
        if scheme not in ("sip", "sips", "tel") or not rest.strip():
            raise ValueError("target_uri must be a sip: or tel: URI")
        return value


def _ctx(request: Request) -> EmulatorContext:
    ctx: EmulatorContext = request.app.state.ctx
    return ctx


def _reachable_call(request: Request) -> EmulatedCall:
    """The call named in the path; 404 if unknown, missed or ended."""
    call_id = request.path_params["call_id"]
    call = _ctx(request).registry.get(call_id)
    if call is None or call.state in ("missed", "ended"):
        raise not_found(f"Call '{call_id}'", code="call_not_found")
    return call


def _refuse_if_decided(call: EmulatedCall, action: str) -> None:
    # The real API answers a repeated accept (a redelivered webhook) with 404: once a
    # call is answered or declined it is no longer a pending SIP call to decide.
    if call.state in ("active", "rejected"):
        call.repeat_decisions.append(action)
        raise not_found(f"Pending call '{call.call_id}'", code="call_not_found")


async def accept_call(request: Request) -> Response:
    _reachable_call(request)
    body = await read_json_object(request)
    validate_session(body)
    call = _reachable_call(request)  # again: the caller may have given up meanwhile
    _refuse_if_decided(call, "accept")
    call.accept = body
    call.accepted_at = time.time()
    call.state = "active"
    for field in sets_audio_format(body):
        call.defects.append(
            f"accept sets {field} on a SIP call: the carrier's negotiated codec is "
            "overridden and the caller hears garbled audio"
        )
    call.answered.set()
    start_player(_ctx(request), call)
    return empty_ok()


async def reject_call(request: Request) -> Response:
    _reachable_call(request)
    body = validate_body(RejectRequest, await read_json_object(request, optional=True))
    call = _reachable_call(request)
    _refuse_if_decided(call, "reject")
    call.reject_status = body.status_code
    call.end("reject", state="rejected")
    return empty_ok()


def _note_control(request: Request, action: str) -> None:
    """Count a refer or hangup request in the call's ground truth, even one refused."""
    call = _ctx(request).registry.get(request.path_params["call_id"])
    if call is not None:
        call.control_requests.append(action)


async def refer_call(request: Request) -> Response:
    _note_control(request, "refer")
    _reachable_call(request)
    body = validate_body(ReferRequest, await read_json_object(request))
    call = _reachable_call(request)
    if call.state != "active":
        raise conflict(
            f"Cannot refer call '{call.call_id}': it is {call.state}, not active.",
            code="call_not_active",
        )
    call.refer_target = body.target_uri
    call.end("refer")
    return empty_ok()


async def hangup_call(request: Request) -> Response:
    _note_control(request, "hangup")
    call = _reachable_call(request)
    if call.state == "rejected":
        raise conflict(
            f"Cannot hang up call '{call.call_id}': it was rejected.", code="call_already_rejected"
        )
    call.hangup_requested = True
    call.end("hangup")
    return empty_ok()


async def create_call(request: Request) -> Response:
    """A WebRTC call from an SDP offer: multipart ``sdp`` (+ ``session``) or raw SDP."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: dict[str, Any] = {"type": "realtime"}
    if content_type == "multipart/form-data":
        async with request.form(max_files=4, max_fields=4) as form:
            sdp = await _form_text(form.get("sdp"))
            session_part = form.get("session")
            if session_part is not None:
                session = validate_session_json(
                    await _form_text(session_part), param_prefix="session"
                )
    elif content_type == "application/sdp":
        sdp = (await read_body(request)).decode("utf-8", errors="replace")
    else:
        raise ApiError(
            400,
            "Send the SDP offer as multipart/form-data (parts 'sdp' and 'session') "
            "or as an application/sdp body.",
            code="unsupported_content_type",
        )
    if not sdp or not sdp.lstrip().startswith("v=0"):
        raise ApiError(
            400, "The 'sdp' offer is missing or not SDP.", param="sdp", code="invalid_sdp"
        )
    call = EmulatedCall(
        call_id="rtc_" + secrets.token_hex(16),
        from_uri="webrtc",
        to_uri="webrtc",
        scenario="webrtc",
        sip_headers=[],
    )
    call.accept = session
    call.accepted_at = time.time()
    call.state = "active"
    call.answered.set()
    _ctx(request).registry.add(call)
    return Response(
        sdp_answer(call.call_id),
        201,
        headers={"location": f"/v1/realtime/calls/{call.call_id}"},
        media_type="application/sdp",
    )


async def _form_text(part: UploadFile | str | None) -> str:
    if part is None:
        return ""
    if isinstance(part, str):
        return part
    return (await part.read()).decode("utf-8", errors="replace")


def sdp_answer(call_id: str) -> str:
    """A plausible SDP answer: one audio section, Opus, ICE and DTLS attributes."""
    session_id = int(time.time() * 1000)
    lines = [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        f"a=ice-ufrag:{call_id[-8:]}",
        f"a=ice-pwd:{secrets.token_hex(12)}",
        "a=fingerprint:sha-256 " + ":".join(f"{b:02X}" for b in secrets.token_bytes(32)),
        "a=setup:active",
        "a=sendrecv",
        "a=rtpmap:111 opus/48000/2",
    ]
    return "\r\n".join(lines) + "\r\n"


ROUTES = [
    Route("/v1/realtime/calls", guarded(create_call, allow_client_secret=True), methods=["POST"]),
    Route("/v1/realtime/calls/{call_id}/accept", guarded(accept_call), methods=["POST"]),
    Route("/v1/realtime/calls/{call_id}/reject", guarded(reject_call), methods=["POST"]),
    Route("/v1/realtime/calls/{call_id}/refer", guarded(refer_call), methods=["POST"]),
    Route("/v1/realtime/calls/{call_id}/hangup", guarded(hangup_call), methods=["POST"]),
]
