"""Reading a routing policy from YAML, with errors that name the line and the field.

``parse_policy`` turns YAML text into a ``Policy`` or raises ``PolicyError`` whose
issues read ``policy.yaml:14: routes[2].action.code: Input should be ...``. Line numbers
come from the YAML node tree (pyyaml marks), walked along pydantic's error location.

The YAML dialect is YAML 1.2's core schema, not pyyaml's 1.1 default: in a phone policy
``+14155550100`` and ``0800123`` must stay strings, ``09:00`` must not become the
sexagesimal integer 540, and a header value ``no`` must not become ``False``.

``PolicySource`` serves the current policy to long-running processes: each use costs
one ``stat``; a changed file is parsed again, and an invalid new file keeps the last
good policy and logs why, once per change.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import PolicyError, PolicyIssue
from shared.policy import Policy

logger = logging.getLogger(__name__)

DEMO_SOURCE = "<demo>"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class _CoreLoader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core rules for booleans and numbers."""


_CoreLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CoreLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreLoader.add_implicit_resolver(_INT, re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789"))
_CoreLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^-?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"),
    list("-+.0123456789"),
)


def parse_policy(text: str, source: str) -> Policy:
    """The policy in ``text``; ``source`` names it in errors. Raises ``PolicyError``."""
    try:
        loader = _CoreLoader(text)
    except yaml.reader.ReaderError as err:
        # The reader refuses control characters before any node exists: no mark, a position.
        at_line = text.count("\n", 0, err.position) + 1
        issue = PolicyIssue(source, at_line, "", f"invalid YAML: {err.reason}")
        raise PolicyError([issue]) from None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError([PolicyIssue(source, line, "", f"invalid YAML: {err.problem}")]) from None
    except yaml.YAMLError as err:
        raise PolicyError([PolicyIssue(source, None, "", f"invalid YAML: {err}")]) from None
    finally:
        loader.dispose()
    if root is None or not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise PolicyError([PolicyIssue(source, line, "", "the policy must be a YAML mapping")])
    duplicates = list(_duplicate_keys(root, source, ""))
    if duplicates:
        raise PolicyError(duplicates)
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        issues = []
        for error in err.errors(include_url=False):
            line, path = _locate(root, data, error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            issues.append(PolicyIssue(source, line, path, message))
        raise PolicyError(sorted(issues, key=lambda issue: issue.line or 0)) from None


def load_policy(path: Path) -> Policy:
    """The policy in the file at ``path``; unreadable files raise ``PolicyError`` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise PolicyError([PolicyIssue(str(path), None, "", f"cannot read: {reason}")]) from None
    return parse_policy(text, str(path))


def demo_policy() -> Policy:
    """The built-in demo policy, used when ``SWITCHBOARD_CONFIG`` is unset."""
    text = resources.files("shared").joinpath("demo_policy.yaml").read_text(encoding="utf-8")
    return parse_policy(text, DEMO_SOURCE)


def summary(policy: Policy) -> str:
    """One line describing ``policy``, for ``switchboard config check``."""

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    cap = policy.capacity.max_calls
    parts = [
        count(len(policy.profiles), "profile"),
        count(len(policy.routes), "route"),
        count(len(policy.schedules), "schedule"),
        count(len(policy.transfer_targets), "transfer target"),
        count(len(policy.tools), "tool"),
        f"capacity {'unlimited' if cap is None else cap}",
        f"prices {policy.prices.version}",
    ]
    return ", ".join(parts)


def _duplicate_keys(node: yaml.Node, source: str, path: str) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            if name in seen:
                line = key.start_mark.line + 1
                issues.append(PolicyIssue(source, line, child, "duplicate key"))
            seen.add(name)
            issues += _duplicate_keys(value, source, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues += _duplicate_keys(item, source, f"{path}[{i}]")
    return issues


def _locate(root: yaml.Node, data: Any, loc: tuple[str | int, ...]) -> tuple[int, str]:
    """The line and dotted path of pydantic location ``loc`` in the YAML tree.

    Pydantic adds parts that are not in the document (a union's tag, a validator's
    name); a part that is not a key or index of the data there is such a part and is
    skipped, unless it is the last one: that is a missing field, named in the path.
    """
    node, value, path = root, data, ""
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(value, dict) and isinstance(node, yaml.MappingNode):
            key = _dict_key(value, part)
            if key is None:
                if last:
                    path = f"{path}.{part}" if path else str(part)
                continue
            child = next((v for k, v in node.value if _same_key(k, key)), None)
            if child is None:  # the key came from a YAML merge (<<); stop at its mapping
                return node.start_mark.line + 1, f"{path}.{key}" if path else str(key)
            node, value = child, value[key]
            path = f"{path}.{key}" if path else str(key)
        elif (
            isinstance(value, list)
            and isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(value)
        ):
            node, value, path = node.value[part], value[part], f"{path}[{part}]"
    return node.start_mark.line + 1, path


def _dict_key(value: dict[Any, Any], part: str | int) -> Any:
    if part in value:
        return part
    for key in value:
        if str(key) == str(part):
            return key
    return None


def _same_key(node: yaml.Node, key: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and str(node.value) == str(key)


class PolicySource:
    """The current policy of a long-running process, reloaded when its file changes.

    With no path it serves the demo policy. The first load must succeed (a process
    should not start on a broken policy); later failures keep the last good policy.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._failed_signature: tuple[int, int, int] | None = None
        if path is None:
            self._policy = demo_policy()
        else:
            self._signature = self._stat()
            self._policy = load_policy(path)

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        # Inode and size catch an editor's atomic rename within one mtime tick.
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Policy:
        """The policy to use now: reloaded first if the file changed since the last look."""
        if self.path is None:
            return self._policy
        signature = self._stat()
        if signature is None or signature in (self._signature, self._failed_signature):
            return self._policy
        with self._lock:
            if signature in (self._signature, self._failed_signature):
                return self._policy
            try:
                policy = load_policy(self.path)
            except PolicyError as err:
                self._failed_signature = signature
                logger.error("policy %s is invalid, keeping the last good one:\n%s", self.path, err)
                return self._policy
            self._policy, self._signature, self._failed_signature = policy, signature, None
            logger.info("policy %s reloaded", self.path)
            return policy
