"""Names that producers and consumers of work must agree on: Celery queues and tasks.

The ingress publishes ``ROUTE_CALL_TASK`` to ``CONTROL_QUEUE`` with the call id as the
only argument; the control worker consumes it. Accepted calls wait for a session
runner in the Redis list named by ``shared.keys`` (pull-based hand-over).
"""

from __future__ import annotations

CONTROL_QUEUE = "control"
"""Routing of incoming calls: decide, accept or reject. Prefetch 1."""

COMMANDS_QUEUE = "commands"
"""The call-control verbs commands send: ``REJECT_CALL_TASK``, ``REFER_CALL_TASK``,
``HANGUP_CALL_TASK``; apart from routing, so commands never hold up a ringing call."""

TOOLS_QUEUE = "tools"
"""Blocking tool calls executed for session workers."""

POST_CALL_QUEUE = "post_call"
"""Work after a call ended: final transcript, summary record, call.completed webhook."""

ALL_QUEUES = (CONTROL_QUEUE, COMMANDS_QUEUE, TOOLS_QUEUE, POST_CALL_QUEUE)

ROUTE_CALL_TASK = "switchboard.route_call"
"""args: (call_id: str,). Decide, take an admission slot, accept or reject the call."""

REJECT_CALL_TASK = "switchboard.reject_call"
"""args: (call_id, status_code[, reason]). Refuse a call no task has claimed yet."""
REFER_CALL_TASK = "switchboard.refer_call"
"""args: (call_id, target). Blind-transfer an answered call to a named target or URI."""
HANGUP_CALL_TASK = "switchboard.hangup_call"
"""args: (call_id,). End a call; safe to repeat."""

RUN_TOOL_TASK = "switchboard.run_tool"
"""args: (request_id, function, arguments_json, inbox_key, deadline_at). Runs a blocking
Python tool on ``TOOLS_QUEUE`` and LPUSHes its outcome onto the runner's inbox."""

POST_CALL_TASK = "switchboard.post_call"
"""args: (call_id: str,). Summary record and the ``call.completed`` webhook of an ended call."""
