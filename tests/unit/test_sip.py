"""From/To parsing: a table of real-world header shapes, and no crash on any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.sip import MAX_OUTPUT_CHARS, SipAddress, find_header, parse_address, phone_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"Alice Caller" <sip:+14155550100@sip.example.com;user=phone>;tag=a1b2',
            SipAddress("+14155550100", "sip:+14155550100@sip.example.com", "Alice Caller"),
        ),
        (
            "<sip:alice@example.com>",
            SipAddress(None, "sip:alice@example.com", None),
        ),
        (
            "<sip:alice@Example.COM:5061;transport=tls>;tag=9",
            SipAddress(None, "sip:alice@example.com:5061", None),
        ),
        (
            "sip:+18005550100@sip.example.com",
            SipAddress("+18005550100", "sip:+18005550100@sip.example.com", None),
        ),
        (
            "sip:+18005550100@sip.example.com;tag=xyz",
            SipAddress("+18005550100", "sip:+18005550100@sip.example.com", None),
        ),
        (
            "SIPS:+44 20 7946 0958@carrier.example",
            SipAddress("+442079460958", "sips:+44 20 7946 0958@carrier.example", None),
        ),
        (
            "tel:+1-415-555-0100;phone-context=example.com",
            SipAddress("+14155550100", "tel:+14155550100", None),
        ),
        (
            "<tel:+1.415.555.0100>",
            SipAddress("+14155550100", "tel:+14155550100", None),
        ),
        ("tel:7042;phone-context=example.com", SipAddress("7042", "tel:7042", None)),
        ("+14155550100", SipAddress("+14155550100", None, None)),
        ("+1 (415) 555-0100", SipAddress("+14155550100", None, None)),
        ("4155550100", SipAddress("4155550100", None, None)),
        (
            "Bob <sip:%2B14155550100@host>",
            SipAddress("+14155550100", "sip:+14155550100@host", "Bob"),
        ),
        (
            "<sip:+14155550100;npdi;rn=+1415@gw.example;user=phone>",
            SipAddress("+14155550100", "sip:+14155550100@gw.example", None),
        ),
        (
            "sip:anonymous@anonymous.invalid",
            SipAddress(None, "sip:anonymous@anonymous.invalid", None),
        ),
        ("<sip:gw.example.com>", SipAddress(None, "sip:gw.example.com", None)),
        (
            '"Unterminated <sip:+14155550100@h',
            SipAddress("+14155550100", "sip:+14155550100@h", "Unterminated"),
        ),
        ("", SipAddress()),
        ("<>", SipAddress()),
        ("mailto:alice@example.com", SipAddress()),
        ("not a number", SipAddress()),
        ("sip:", SipAddress()),
    ],
)
def test_from_and_to_values(value: str, expected: SipAddress) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    ("address", "caller_id"),
    [
        (SipAddress("+14155550100", "sip:+14155550100@h"), "+14155550100"),
        (SipAddress(None, "sip:alice@example.com"), "sip:alice@example.com"),
        (SipAddress(), ""),
    ],
)
def test_caller_id_prefers_the_number(address: SipAddress, caller_id: str) -> None:
    assert address.caller_id == caller_id


@pytest.mark.parametrize(
    ("text", "number"),
    [("+1 415 555 0100", "+14155550100"), ("%2B1", "+1"), ("12a", None), ("+", None), ("", None)],
)
def test_phone_numbers(text: str, number: str | None) -> None:
    assert phone_number(text) == number


HEADERS = [
    ("Via", "SIP/2.0/TLS 1.2.3.4"),
    ("FROM", '"A" <sip:+1@h>'),
    ("from", "<sip:+2@h>"),
    ("t", "<sip:+3@h>"),
]


@pytest.mark.parametrize(
    ("name", "value"),
    [("From", '"A" <sip:+1@h>'), ("to", "<sip:+3@h>"), ("via", "SIP/2.0/TLS 1.2.3.4"), ("X", None)],
)
def test_header_lookup_is_case_insensitive_first_wins_compact_forms_count(
    name: str, value: str | None
) -> None:
    assert find_header(HEADERS, name) == value


def test_a_huge_value_is_cut_and_the_result_bounded() -> None:
    value = "<sip:" + "a" * 100_000 + "@h>"
    address = parse_address(value)
    assert address.uri is not None
    assert len(address.uri) <= MAX_OUTPUT_CHARS
    assert len(address.caller_id) <= MAX_OUTPUT_CHARS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_without_raising(value: str) -> None:
    address = parse_address(value)
    assert len(address.caller_id) <= MAX_OUTPUT_CHARS


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r'("[^"]*" )?<?(sips?|tel|SIP):[^>]{0,40}>?(;tag=[a-z0-9]{0,8})?', fullmatch=True)
)
def test_uri_like_text_parses_without_raising(value: str) -> None:
    parse_address(value)
