"""The dialer places calls: what the carrier and OpenAI do when a phone rings.

Placing a call registers it as ringing, queues its signed ``realtime.call.incoming``
webhook and arms the ring timer: a caller not answered within their patience (the
scenario's ``ring_patience_s`` times ``time_scale``, else the unscaled
``EmulatorConfig.ring_timeout_s``) gives up, and the call becomes ``missed`` (so a
late accept gets 404). SIP header values vary in form the way real carriers' do, so
that header parsers get exercised.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Sequence

from emulator.context import EmulatorContext
from emulator.state import EmulatedCall, new_call_id
from emulator.webhooks_out import WebhookSender

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
URI = re.compile(r"^(sip|sips|tel):\S+$")


class UnknownScenarioError(KeyError):
    """The named scenario is neither built in nor loaded from a scenario folder."""


def is_party(value: str) -> bool:
    """Whether ``value`` is an E.164 number or a ``sip:``/``sips:``/``tel:`` URI."""
    return bool(E164.match(value) or URI.match(value))


def party_uri(value: str, domain: str) -> str:
    """A SIP or tel URI for an E.164 number or an existing URI."""
    if URI.match(value):
        return value
    if E164.match(value):
        return f"sip:{value}@{domain}"
    raise ValueError(f"not an E.164 number or sip:/tel: URI: {value!r}")


def _user_part(uri: str) -> str:
    user = uri.split(":", 1)[1]
    return user.split("@", 1)[0].split(";", 1)[0]


def from_header(uri: str, style: int) -> str:
    """A From value in one of the forms carriers send (bare, name-addr, with display name)."""
    tag = secrets.token_hex(4)
    if style == 0:
        return uri
    if style == 1:
        return f'"{_user_part(uri)}" <{uri}>;tag={tag}'
    return f"<{uri}>;tag={tag}"


def to_header(uri: str, style: int) -> str:
    if style == 0:
        return uri
    if style == 1:
        return f"<{uri}>"
    return f'"{_user_part(uri)}" <{uri}>'


class Dialer:
    """Places calls into one emulator: registry entry, webhook and ring timer."""

    def __init__(self, ctx: EmulatorContext, webhooks: WebhookSender) -> None:
        self._ctx = ctx
        self._webhooks = webhooks

    @property
    def webhooks(self) -> WebhookSender:
        return self._webhooks

    def place(
        self,
        from_party: str,
        to_party: str,
        scenario: str,
        extra_headers: Sequence[dict[str, str]] = (),
    ) -> EmulatedCall:
        """Place one call and return it (ringing). Raises for an unknown scenario or party."""
        ctx = self._ctx
        script = ctx.scenarios.get(scenario)
        if script is None:
            raise UnknownScenarioError(scenario)
        domain = ctx.config.sip_domain
        from_uri = party_uri(from_party, domain)
        to_uri = party_uri(to_party, domain)
        style = ctx.rng.randrange(3)
        headers = [
            {"name": "From", "value": from_header(from_uri, style)},
            {"name": "To", "value": to_header(to_uri, style)},
            {"name": "Call-ID", "value": f"{uuid.uuid4()}@{domain}"},
            *({"name": h["name"], "value": h["value"]} for h in extra_headers),
        ]
        call = ctx.registry.add(
            EmulatedCall(
                call_id=new_call_id(),
                from_uri=from_uri,
                to_uri=to_uri,
                scenario=scenario,
                sip_headers=headers,
            )
        )
        # Scenario durations are scripted time (scaled); the ring timeout is real time.
        if script.ring_patience_s is None:
            patience_s = ctx.config.ring_timeout_s
        else:
            patience_s = script.ring_patience_s * ctx.config.time_scale
        timer = asyncio.get_running_loop().call_later(patience_s, ring_out, call)
        call.on_end.append(lambda _call: timer.cancel())
        self._webhooks.send_incoming(call)
        return call


def ring_out(call: EmulatedCall) -> None:
    """The caller stops waiting: a call still ringing is missed."""
    if call.state == "ringing":
        call.end("ring_timeout", state="missed")
