"""Arbitrary YAML never crashes the policy loader: a ``Policy`` or a located ``PolicyError``."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import PolicyError
from shared.policy import Policy
from shared.policy_file import parse_policy

SCALAR = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
KEYS = st.sampled_from(
    ["profiles", "routes", "capacity", "tools", "transfer_targets", "schedules", "match",
     "action", "type", "profile", "code", "max_calls", "instructions", "greeting", "when_full",
     "handler", "timeout_s", "voice", "model"]
) | st.text(max_size=10)  # fmt: skip
TREE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


def outcome(text: str) -> Policy | PolicyError:
    try:
        return parse_policy(text, "fuzz.yaml")
    except PolicyError as err:
        return err


def check(text: str) -> None:
    result = outcome(text)
    if isinstance(result, PolicyError):
        assert result.issues
        assert str(result)
        for issue in result.issues:
            assert issue.source == "fuzz.yaml"
            assert issue.line is None or 1 <= issue.line <= text.count("\n") + 2
    else:
        assert isinstance(result, Policy)


@settings(max_examples=300, deadline=None)
@given(tree=TREE)
def test_any_yaml_tree_is_a_policy_or_a_located_error(tree: Any) -> None:
    check(yaml.safe_dump(tree))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_is_a_policy_or_a_located_error(text: str) -> None:
    check(text)
