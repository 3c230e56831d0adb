"""Caller-variable templates for instructions and greetings: ``Hello {caller}``.

A deliberately tiny language instead of ``str.format``: ``{name}`` is replaced, ``{{``
and ``}}`` are literal braces, nothing else. ``str.format`` would let an operator's
template reach attributes (``{caller.__class__}``) and would fail at call time on a
typo; here every variable is checked when the policy loads.

Variables: ``caller`` and ``called`` (the phone numbers or SIP users), ``call_id``,
``profile``, and ``sip.<Header-Name>`` for any SIP header of the INVITE (matched in any
case; empty when absent). Values come from the caller and are untrusted: rendering
strips control characters and truncates each one, so a hostile header cannot smuggle
pages of text into the model's instructions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLAIN_VARIABLES = frozenset({"caller", "called", "call_id", "profile"})
SIP_PREFIX = "sip."
MAX_VALUE_CHARS = 200
"""Longest caller-supplied value put into a rendered template."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TemplateError(ValueError):
    """A template that uses an unknown variable or a stray brace."""


def template_variables(template: str) -> list[str]:
    """The variables ``template`` uses, in order; raises ``TemplateError`` if malformed."""
    found: list[str] = []
    for match in _TOKEN.finditer(template):
        piece = match.group(0)
        if piece in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise TemplateError(f"stray {piece!r} at offset {match.start()}: write {piece * 2}")
        _check_name(name.strip())
        found.append(name.strip())
    return found


def _check_name(name: str) -> None:
    if name in PLAIN_VARIABLES:
        return
    if name.startswith(SIP_PREFIX) and _HEADER_NAME.match(name[len(SIP_PREFIX) :]):
        return
    known = ", ".join(sorted(PLAIN_VARIABLES))
    raise TemplateError(f"unknown variable {{{name}}}: use one of {known} or sip.<Header>")


def clean_value(value: str) -> str:
    """A caller-supplied value made safe to embed: no control characters, bounded length."""
    return _CONTROL.sub(" ", value)[:MAX_VALUE_CHARS]


def render_template(
    template: str, variables: Mapping[str, str], sip_headers: Mapping[str, str]
) -> str:
    """``template`` with its variables replaced.

    ``variables`` holds the plain variables; ``sip_headers`` maps lower-cased header
    names to values. A template that passed ``template_variables`` never raises here.
    """

    def replace(match: re.Match[str]) -> str:
        piece = match.group(0)
        if piece == "{{":
            return "{"
        if piece == "}}":
            return "}"
        name = (match.group(1) or "").strip()
        if name.startswith(SIP_PREFIX):
            return clean_value(sip_headers.get(name[len(SIP_PREFIX) :].lower(), ""))
        if name in PLAIN_VARIABLES:
            return clean_value(variables.get(name, ""))
        raise TemplateError(f"unknown variable {{{name}}}")

    return _TOKEN.sub(replace, template)
