"""Caller and called party from the SIP headers of an INVITE.

The values are untrusted (they come from whoever placed the call), so parsing never
raises: anything it cannot read yields an empty ``SipAddress``. It understands the
name-addr and addr-spec forms of From/To (RFC 3261 section 20.10), ``sip:``, ``sips:``
and ``tel:`` URIs (RFC 3966, visual separators dropped) and bare numbers. A phone
number is reported as ``+`` and digits; any other SIP user as ``sip:user@host``.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

MAX_INPUT_CHARS = 1024
"""Longer header values are cut before parsing, which bounds the work per header."""

MAX_OUTPUT_CHARS = 256
"""A parsed address longer than this is cut, which bounds what a record stores."""

# Compact forms (RFC 3261 section 7.3.3) are legal in an INVITE.
_COMPACT = {"from": "f", "to": "t"}
_VISUAL_SEPARATORS = str.maketrans("", "", " -.()\t")
_NUMBER = re.compile(r"\+?[0-9]{1,32}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)


@dataclass(frozen=True)
class SipAddress:
    """One parsed From/To value; any part may be missing."""

    number: str | None = None
    uri: str | None = None
    display_name: str | None = None

    @property
    def caller_id(self) -> str:
        """The phone number if there is one, else the URI, else ``""``."""
        return (self.number or self.uri or "")[:MAX_OUTPUT_CHARS]


def phone_number(text: str) -> str | None:
    """``text`` as ``+``/digits with visual separators removed, or None if not a number."""
    candidate = unquote(text).strip().translate(_VISUAL_SEPARATORS)
    return candidate if _NUMBER.fullmatch(candidate) else None


def _split_name_addr(value: str) -> tuple[str | None, str]:
    lt = value.find("<")
    if lt < 0:
        # Without brackets, everything after ';' is a header parameter (e.g. ;tag=).
        return None, value.split(";", 1)[0].strip()
    gt = value.find(">", lt)
    name = value[:lt].strip().strip('"').strip() or None
    return name, value[lt + 1 : gt if gt >= 0 else len(value)].strip()


def _parse_uri(uri: str) -> tuple[str | None, str | None]:
    """(number, cleaned uri) of one URI or bare number."""
    match = _SCHEME.fullmatch(uri)
    if match is None or match.group(1).isdigit():
        return phone_number(uri), None
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "tel":
        number = phone_number(rest.split(";", 1)[0])
        return number, f"tel:{number}" if number else None
    if scheme not in ("sip", "sips"):
        return None, None
    rest = rest.split("?", 1)[0]
    user, at, hostpart = rest.rpartition("@")
    host = (hostpart if at else rest).split(";", 1)[0].strip().lower()
    user = unquote(user.split(":", 1)[0].split(";", 1)[0]).strip() if at else ""
    number = phone_number(user) if user else None
    if not host and not user:
        return None, None
    return number, f"{scheme}:{user}@{host}" if user else f"{scheme}:{host}"


def parse_address(value: str) -> SipAddress:
    """Parse one From/To header value; never raises on any input."""
    try:
        name, uri = _split_name_addr(value[:MAX_INPUT_CHARS])
        number, clean_uri = _parse_uri(uri)
    except (ValueError, IndexError, UnicodeError):
        return SipAddress()
    if clean_uri is not None:
        clean_uri = clean_uri[:MAX_OUTPUT_CHARS]
    return SipAddress(number=number, uri=clean_uri, display_name=name)


def find_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive, compact form too)."""
    wanted = name.lower()
    compact = _COMPACT.get(wanted)
    for header_name, value in headers:
        lowered = header_name.strip().lower()
        if lowered == wanted or (compact is not None and lowered == compact):
            return value
    return None
