"""Every Redis key Switchboard uses, with its shape, type and lifetime, in one place.

All keys start with ``PREFIX``. Keys that one atomic operation (a Lua script or a
MULTI) touches together carry the same hash tag, so a Redis Cluster routes them to one
slot:

- everything about one call is tagged with the call id: ``sb:call:{<call_id>}...``;
- admission control keys share the ``{admission}`` tag.

Global keys (the live-call index, runner registry, cluster counters) are kept out of
per-call scripts, with one exception: creating a call adds it to the live index and
queues its routing message in the same script (see ``shared.call_scripts``); that needs
a single-node Redis, as the Celery broker does anyway.

Keys (type; lifetime):

- ``sb:wh:{<call_id>}:<webhook_id>``: string; a webhook delivery already acted on;
  ``WEBHOOK_DEDUPE_TTL_S``.
- ``sb:call:{<call_id>}``: hash; the call record (``shared.models.CallRecord``); it is
  also the dedupe on call id; ``CALL_TTL_S``, renewed on every change.
- ``sb:call:{<call_id>}:transcript``: stream; transcript lines, capped at
  ``TRANSCRIPT_MAXLEN``; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:events``: stream; lifecycle and session events, capped at
  ``EVENTS_MAXLEN``; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:commands``: stream; operator commands for the live call, capped
  at ``COMMANDS_MAXLEN``; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:tools``: hash; tool-call id -> state (running, done with its
  outcome, answered), so each tool call runs at most once and is answered at most once;
  ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:command_results``: hash; command id -> outcome JSON (the first
  outcome recorded wins); ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:command_claims``: hash; command id -> fencing token of the
  session worker that started applying it (before any of its effects), so a runner
  taking the call over never applies it again; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:control``: string; JSON of the call's one Refer or Hangup (action,
  end reason, detail, target, command id, fencing token, time), set once (``NX``) just
  before the REST request, so the call is transferred or hung up once, also across a
  takeover (``workers.sessions.session_store``); ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:command:<command_id>:done``: list; one element once the command
  has an outcome, for waiters to block on; ``COMMAND_DONE_TTL_S``.
- ``sb:call:{<call_id>}:counted``: hash; what accounting already counted for the call
  (response ids, outcomes), so nothing is counted twice; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:usage``: hash; the call's token counts by model and component
  (``shared.accounting``); ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:summary``: hash; the post-call summary and its webhook delivery
  state (``workers.post_call``); ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:lease``: string; the runner attached to the call and its fencing
  token; ``LEASE_TTL_S``.
- ``sb:call:{<call_id>}:fence``: string; the fencing-token counter; ``CALL_TTL_S``.
- ``sb:call:{<call_id>}:session``: string; JSON snapshot of the call's session worker
  (core state and command cursor), for failover and hand-over; ``CALL_TTL_S``.
- ``sb:calls:live``: zset; call id -> created_at of calls not yet terminal (a hint).
- ``sb:calls:pending``: list; accepted call ids waiting for a session runner to pull.
- ``sb:runners``: zset; runner id -> last heartbeat (unix s).
- ``sb:runner:<runner_id>``: hash; host, pid, capacity, load, draining flag;
  ``RUNNER_TTL_S``.
- ``sb:runner:<runner_id>:calls``: set; call ids the runner holds; ``RUNNER_TTL_S``.
- ``sb:runner:<runner_id>:inbox``: list; call ids pulled from ``sb:calls:pending`` and not
  yet taken on (a reliable-queue hop, so a runner dying mid-pull loses no call);
  ``RUNNER_TTL_S``.
- ``sb:runner:<runner_id>:commands``: list; ids of the runner's calls whose command
  streams have something new (pushed by whoever queues a command, and by the runner when
  it takes a call on); ``RUNNER_TTL_S``.
- ``sb:control:workers``: zset; control worker node name -> last heartbeat (unix s) of
  its recovery loop (``workers.recovery``); entries silent for an hour are dropped.
- ``sb:control:recovery``: string; the token of the control worker running the recovery
  sweep now (a lease, so one worker sweeps at a time); a few seconds.
- ``sb:{admission}:active``: zset; call id -> admitted at, cluster-wide.
- ``sb:{admission}:profile:<profile>``: zset; the same per routing profile.
- ``sb:{admission}:holders``: hash; call id -> profile of each admitted call (for release).
- ``sb:stats``: hash; cluster counters (outcomes, cost, tokens).
- ``sb:stats:profile:<profile>``: hash; the same per profile.
- ``sb:stats:profiles``: set; every profile that has a counters hash (for readers).
- ``sb:tools:inbox:<inbox_id>``: list; replies of tool calls run by Celery workers for
  one session-runner process; ``TOOL_REPLY_TTL_S``.

The broker's queues (``shared.queues``) are plain kombu list keys without the prefix.
"""

from __future__ import annotations

PREFIX = "sb:"

WEBHOOK_DEDUPE_TTL_S = 73 * 3600
"""OpenAI retries a delivery for up to 72 h; one more hour covers clock skew."""

CALL_TTL_S = 7 * 24 * 3600
"""How long a call record and its streams outlive their last change.

Must exceed ``WEBHOOK_DEDUPE_TTL_S``: the record itself is the dedupe on call id.
"""

LEASE_TTL_S = 3
"""A runner renews its lease well within this; a dead runner's calls free up after it.

Short, because failover (runner killed -> its calls re-attached elsewhere) has a 5 s
target: expiry plus one sweep plus the attach must fit in it.
"""

RUNNER_TTL_S = 30
"""A runner that stops heartbeating disappears from the registry after this."""

COMMAND_DONE_TTL_S = 600
"""Long enough for any waiter on a command's outcome; the outcome itself stays longer."""

TOOL_REPLY_TTL_S = 60
"""A tool reply nobody collected within this is of no use: its deadline has passed."""

TRANSCRIPT_MAXLEN = 2_000
EVENTS_MAXLEN = 5_000
COMMANDS_MAXLEN = 1_000

LIVE_CALLS = PREFIX + "calls:live"
PENDING_CALLS = PREFIX + "calls:pending"
RUNNERS = PREFIX + "runners"
CONTROL_WORKERS = PREFIX + "control:workers"
RECOVERY_LOCK = PREFIX + "control:recovery"
STATS = PREFIX + "stats"
STATS_PROFILES = STATS + ":profiles"

_ADMISSION = PREFIX + "{admission}"
ADMISSION_ACTIVE = _ADMISSION + ":active"
ADMISSION_HOLDERS = _ADMISSION + ":holders"


def _call(call_id: str) -> str:
    # Braces inside an id would move the hash tag, so they are refused, not escaped.
    if not call_id or "{" in call_id or "}" in call_id:
        raise ValueError("call id must be non-empty and contain no braces")
    return f"{PREFIX}call:{{{call_id}}}"


def call_record(call_id: str) -> str:
    """The call record hash."""
    return _call(call_id)


def webhook_dedupe(call_id: str, webhook_id: str) -> str:
    """Marker for one webhook delivery, tagged with the call it announced."""
    _call(call_id)
    return f"{PREFIX}wh:{{{call_id}}}:{webhook_id}"


def call_transcript(call_id: str) -> str:
    """The call's transcript stream."""
    return _call(call_id) + ":transcript"


def call_events(call_id: str) -> str:
    """The call's event stream."""
    return _call(call_id) + ":events"


def call_commands(call_id: str) -> str:
    """The call's command stream."""
    return _call(call_id) + ":commands"


def call_tools(call_id: str) -> str:
    """The call's tool ledger."""
    return _call(call_id) + ":tools"


def call_command_results(call_id: str) -> str:
    """The outcomes of the call's commands."""
    return _call(call_id) + ":command_results"


def call_command_claims(call_id: str) -> str:
    """The commands of the call a session worker started applying."""
    return _call(call_id) + ":command_claims"


def call_control(call_id: str) -> str:
    """The call's Refer or Hangup, claimed before its REST request."""
    return _call(call_id) + ":control"


def call_command_done(call_id: str, command_id: str) -> str:
    """Signal list of one command, pushed once it has an outcome."""
    return _call(call_id) + f":command:{command_id}:done"


def call_counted(call_id: str) -> str:
    """What accounting already counted for the call."""
    return _call(call_id) + ":counted"


def call_usage(call_id: str) -> str:
    """The call's token counts by model and component."""
    return _call(call_id) + ":usage"


def call_summary(call_id: str) -> str:
    """The call's post-call summary and webhook delivery state."""
    return _call(call_id) + ":summary"


def call_lease(call_id: str) -> str:
    """The call's attachment lease."""
    return _call(call_id) + ":lease"


def call_fence(call_id: str) -> str:
    """The call's fencing-token counter."""
    return _call(call_id) + ":fence"


def runner(runner_id: str) -> str:
    """One runner's registry entry."""
    return f"{PREFIX}runner:{runner_id}"


def runner_calls(runner_id: str) -> str:
    """The calls one runner holds."""
    return f"{PREFIX}runner:{runner_id}:calls"


def runner_inbox(runner_id: str) -> str:
    """Call ids one runner pulled and has not taken on yet."""
    return f"{PREFIX}runner:{runner_id}:inbox"


def runner_commands(runner_id: str) -> str:
    """Ids of one runner's calls whose command streams have new entries."""
    return f"{PREFIX}runner:{runner_id}:commands"


def call_snapshot(call_id: str) -> str:
    """The call's session snapshot."""
    return _call(call_id) + ":session"


def admission_profile(profile: str) -> str:
    """Admitted calls of one routing profile."""
    return f"{_ADMISSION}:profile:{profile}"


def stats_profile(profile: str) -> str:
    """Cluster counters of one routing profile."""
    return f"{STATS}:profile:{profile}"


def tool_inbox(inbox_id: str) -> str:
    """Replies of Celery-run tool calls for one runner process."""
    return f"{PREFIX}tools:inbox:{inbox_id}"


def hash_slot_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first ``{...}`` if non-empty."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key
