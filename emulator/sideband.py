"""The sideband websocket ``GET /v1/realtime``: attach to a call, or open a standalone session.

Handshake, as the real API answers it:

- ``Authorization: Bearer KEY`` as for REST (``config.api_key`` None takes any non-empty
  key); a missing or wrong key is refused before the upgrade with HTTP 401 and a JSON
  ``error`` body.
- ``OpenAI-Beta: realtime=v1`` is upgraded, then gets an ``error`` event with code
  ``beta_api_shape_disabled`` and a close with code 4000.
- ``?call_id=`` attaches to an answered call; an unknown, unanswered or ended call is
  refused before the upgrade with HTTP 404 (``call_id_not_found``), which clients can
  tell apart from a dropped connection. ``?model=`` alone opens a standalone session;
  neither is refused with HTTP 400.

Once attached the socket gets ``session.created`` and then every event of the call;
several sockets may be attached at once. Client events are honoured as in
realtime-api.md section 3.4; anything unknown or malformed gets an ``error`` event that
echoes the client's ``event_id`` and leaves the session as it was.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from emulator.auth import key_problem
from emulator.context import EmulatorContext
from emulator.live_session import ABNORMAL_CLOSE, LiveSession, Outlet
from emulator.player import session_for
from emulator.response import error_event, event, new_id
from emulator.session_config import (
    SessionError,
    check_response_request,
    check_session,
    default_session,
    format_overrides,
    merge_session,
)
from emulator.state import Attachment

BETA_MESSAGE = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
Handler = Callable[[LiveSession, Outlet, dict[str, Any]], Awaitable[None]]


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    body["error"]["code"] = code
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=status))
    else:  # a server without the denial extension can only refuse with 403
        await websocket.close(1008)


async def sideband_endpoint(websocket: WebSocket) -> None:
    """Attach a client to a call's realtime session, or to a standalone one."""
    ctx: EmulatorContext = websocket.app.state.ctx
    problem = key_problem(websocket.headers.get("authorization"), ctx.config.api_key)
    if problem is not None:
        await _deny(websocket, 401, "invalid_api_key", problem)
        return
    if "realtime=v1" in websocket.headers.get("openai-beta", "").replace(" ", ""):
        await websocket.accept()
        error = error_event("beta_api_shape_disabled", BETA_MESSAGE)
        await websocket.send_text(orjson.dumps(error).decode())
        await websocket.close(4000, "invalid_request_error.beta_api_shape_disabled")
        return
    call_id = websocket.query_params.get("call_id")
    model = websocket.query_params.get("model")
    if call_id is not None:
        call = ctx.registry.get(call_id)
        if call is None or call.state != "active":
            await _deny(
                websocket, 404, "call_id_not_found", "No session found for the provided call_id."
            )
            return
        live = session_for(ctx, call)
        await websocket.accept()
        attachment = Attachment(opened_at=time.time())
        call.attachments.append(attachment)
        await _serve(live, Outlet(websocket, attachment))
    elif model:
        await websocket.accept()
        live = LiveSession(ctx, None, default_session(model, sip=False))
        await _serve(live, Outlet(websocket, None))
        await live.close()
    else:
        await _deny(
            websocket, 400, "missing_required_parameter", "Missing required parameter: 'model'."
        )


async def _serve(live: LiveSession, outlet: Outlet) -> None:
    try:
        await live.attach(outlet)
        while outlet.open:
            message = await outlet.websocket.receive()
            if message["type"] == "websocket.disconnect":
                outlet.mark_closed("client", message.get("code", ABNORMAL_CLOSE))
                break
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            await handle_client_text(live, outlet, text)
    finally:
        outlet.mark_closed("client", ABNORMAL_CLOSE)
        live.detach(outlet)


async def handle_client_text(live: LiveSession, outlet: Outlet, text: str) -> None:
    """Act on one client frame; a bad one gets an ``error`` event and changes nothing."""
    if not outlet.open or live.ended:  # a frame that crossed our close: nothing to act on
        return
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        if live.call is not None:
            live.call.record_received({"type": None, "malformed": text[:200]})
        message = "We could not parse the JSON body of your event. Send valid JSON."
        await live.send_to(outlet, error_event("invalid_json", message))
        return
    if not isinstance(body, dict):
        body = {"type": None, "body": body}
    if live.call is not None:
        live.call.record_received(body)
    client_event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else None
    kind = body.get("type")
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    try:
        if handler is None:
            raise SessionError(
                "invalid_value" if kind else "missing_required_parameter",
                f"Invalid value: '{kind}'. Unknown client event type."
                if kind
                else "Missing required parameter: 'type'.",
                "type",
            )
        await handler(live, outlet, body)
    except SessionError as exc:
        error = error_event(exc.code, exc.message, exc.param, client_event_id)
        await live.send_to(outlet, error)


async def _session_update(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    update = check_session(body.get("session"))
    if live.call is not None and live.call.sip_headers:
        for field in format_overrides(update):
            live.call.defects.append(
                f"session.update sets {field} on a SIP call: the carrier's negotiated codec "
                "is overridden and the caller hears garbled audio"
            )
    live.model.session = merge_session(live.model.session, update)
    await live.broadcast(event("session.updated", session=live.model.session), scripted=False)


async def _response_create(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    request = check_response_request(body.get("response") or {})
    if live.response is not None:
        raise SessionError(
            "conversation_already_has_active_response",
            f"Conversation already has an active response in progress: {live.response.id}. "
            "Wait until the response is finished before creating a new one.",
        )
    live.start_response(request)


async def _response_cancel(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    wanted = body.get("response_id")
    if live.response is None or (wanted is not None and wanted != live.response.id):
        raise SessionError(
            "response_cancel_not_active", "Cancellation failed: no active response found."
        )
    live.cancel_response()


async def _item_create(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    item = body.get("item")
    events = live.model.add_client_item(item)
    output = isinstance(item, dict) and item.get("type") == "function_call_output"
    if output and isinstance(item, dict) and live.call is not None:
        name = live.model.tool_calls[item["call_id"]][0]
        record = {"call_id": item["call_id"], "name": name, "output": item["output"]}
        live.call.tool_outputs.append(record | {"at": time.time()})
    await live.broadcast_all(events)
    live.notify()


async def _item_delete(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    item_id = body.get("item_id")
    if not isinstance(item_id, str) or item_id not in live.model.items:
        message = f"Error deleting item: the item with id '{item_id}' does not exist."
        raise SessionError("item_delete_invalid_item_id", message, "item_id")
    del live.model.items[item_id]
    live.model.context.pop(item_id, None)
    await live.broadcast(event("conversation.item.deleted", item_id=item_id), scripted=False)


async def _item_retrieve(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    item = live.model.items.get(str(body.get("item_id")))
    if item is None:
        message = f"Error retrieving item: the item with id '{body.get('item_id')}' does not exist."
        raise SessionError("item_retrieve_invalid_item_id", message, "item_id")
    await live.send_to(outlet, event("conversation.item.retrieved", item=item))


async def _item_truncate(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    item_id, audio_end_ms = body.get("item_id"), body.get("audio_end_ms")
    if not isinstance(item_id, str) or item_id not in live.model.items:
        message = f"Error truncating item: the item with id '{item_id}' does not exist."
        raise SessionError("item_truncate_invalid_item_id", message, "item_id")
    if not isinstance(audio_end_ms, int) or audio_end_ms < 0:
        message = "Invalid value for 'audio_end_ms': expected a non-negative integer."
        raise SessionError("invalid_value", message, "audio_end_ms")
    truncated = event("conversation.item.truncated", item_id=item_id, content_index=0)
    await live.broadcast(truncated | {"audio_end_ms": audio_end_ms}, scripted=False)


async def _audio_commit(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    if not live.pending_audio:
        raise SessionError(
            "input_audio_buffer_commit_empty",
            "Error committing input audio buffer: buffer too small. Expected at least 100ms "
            "of audio, but buffer only has 0.00ms of audio.",
        )
    pending, live.pending_audio = live.pending_audio, []
    transcript = " ".join(text for text, _, _ in pending)
    seconds = sum(seconds for _, seconds, _ in pending)
    events = live.model.commit_caller_audio(new_id("item"), transcript, seconds, pending[-1][2])
    await live.broadcast_all(events)


async def _audio_clear(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    live.pending_audio = []
    await live.broadcast(event("input_audio_buffer.cleared"), scripted=False)


async def _audio_append(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    """Audio on a SIP call comes from the carrier; appended audio is accepted and unused."""


async def _output_clear(live: LiveSession, outlet: Outlet, body: dict[str, Any]) -> None:
    playing = live.cut_playback()
    if playing is not None:
        cleared = event("output_audio_buffer.cleared", response_id=playing)
        await live.broadcast(cleared, scripted=False)


HANDLERS: dict[str, Handler] = {
    "session.update": _session_update,
    "response.create": _response_create,
    "response.cancel": _response_cancel,
    "conversation.item.create": _item_create,
    "conversation.item.delete": _item_delete,
    "conversation.item.retrieve": _item_retrieve,
    "conversation.item.truncate": _item_truncate,
    "input_audio_buffer.commit": _audio_commit,
    "input_audio_buffer.clear": _audio_clear,
    "input_audio_buffer.append": _audio_append,
    "output_audio_buffer.clear": _output_clear,
}
