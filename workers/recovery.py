"""Recovery of calls whose routing was cut off: a control worker killed in the middle of
an accept, a routing message lost when Redis went down.

``route_call`` is acknowledged late, so the messages of a worker killed as a whole stay
in kombu's unacknowledged hash until the broker's visibility timeout, long after the
caller gave up, and their calls keep their admission slots; a message taken off the
queue just before Redis dies is lost outright. Routing is idempotent (the claim, see
``workers.actions``), so the cure is to publish the task again.

Every control worker runs a ``RecoveryLoop`` (``workers.recovery_loop``) that calls
``Recovery.tick`` every second or so: beat (its node name and the time into
``keys.CONTROL_WORKERS``), take or renew the sweep lease ``keys.RECOVERY_LOCK`` (set if
absent, with an expiry; renewed by its holder only), and, while holding it, sweep. The
sweep looks at the live calls created within ``window_s`` and at every admission slot:

- a slot whose call is gone, or terminal for ``release_after_s``, is released (a leak),
  and such calls leave the live index;
- an ``incoming`` call ``incoming_after_s`` old whose message is not in the control
  queue gets a new ``route_call`` message (at the front of the queue);
- an ``accepting`` call not yet accepted is resumed by a ``route_call`` message under
  its claim's task id once its last routing run (``route_run_at``) is
  ``resume_after_s`` old and the worker that ran it (``route_worker``) is dead (no
  beat for ``dead_after_s``), or, whatever the worker, ``stale_after_s`` old: longer
  than any run and its retry countdown, so its message was lost. The resumed task
  finishes the accept (409 "already accepted" counts as done) or, when the caller is
  gone (404) or its wait for a slot is over, ends or rejects the call and frees the slot;
  a claim a ``reject_call`` task holds is resumed the same way and finishes its reject;
- an ``accepting`` call already accepted, ``handover_after_s`` after its accept, with
  no lease and not on the pending list, is handed to the runners again;
- an ``active`` or ``transferring`` call unchanged for ``orphan_after_s`` with no
  runner's lease and not on the pending list is handed to the runners again too: a
  runner that lost it (for example while Redis was away) may not have been able to put
  it back; the runner that takes it finishes it, and one that has ended meanwhile is
  refused at attach and recorded as ended, which frees its slot.

Each publication is noted on the record (``route_requeued_at``, which restarts the
call's clock) and nothing is published for a call whose message is still queued, so a
busy cluster is not flooded with copies; a copy that slips through is harmless (the
claim, the runner lease). When the queue is longer than ``queue_scan_limit`` the
workers are behind and nothing is published until they catch up; likewise nothing is
handed to the runners while their pending list is that long. Each sweep reads the
records and the pending list in a few round trips, however many calls it looks at,
since it runs every second beside the routing itself. Beats are not
trusted while Redis has been up less than ``dead_after_s``, nor for ``dead_after_s``
after a failed tick: every beat is old after an outage.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from shared import keys
from shared.models import TERMINAL_STATES, CallRecord, CallState
from shared.queues import CONTROL_QUEUE, ROUTE_CALL_TASK
from shared.store import CallStore
from shared.task_message import TaskMessages
from workers.admission import Admission
from workers.celery_app import TASK_TIME_LIMIT_S

logger = logging.getLogger(__name__)

# KEYS: lock. ARGV: token, ttl ms. Reply: 1 if the caller holds the lock now.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return 1
"""

# KEYS: lock. ARGV: token. Reply: 1 if the caller held the lock (now released).
_STEP_DOWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


@dataclass(frozen=True)
class RecoveryConfig:
    """How often to sweep and how long each kind of call may sit before it is recovered."""

    every_s: float = 1.0
    lock_ttl_s: float = 5.0
    """The sweep lease; a dead sweeper's lease passes to another worker after this."""
    dead_after_s: float = 5.0
    """A control worker that has not beaten for this long is dead."""
    incoming_after_s: float = 3.0
    """An unclaimed call is normally claimed within milliseconds of its webhook."""
    resume_after_s: float = 6.0
    """Above the longest pause between two runs of one routing (slot poll, backoff: 5 s)."""
    stale_after_s: float = TASK_TIME_LIMIT_S + 15.0
    """No run for this long: no task is running it (the hard time limit) or due to."""
    handover_after_s: float = 5.0
    orphan_after_s: float = 10.0
    """A live call with no runner's lease for this long (well past the runners' own
    failover, about 3-5 s) is handed to the runners again."""
    release_after_s: float = 5.0
    """A finished call's slot is left this long to whatever ended the call."""
    window_s: float = 3600.0
    """Live calls created this recently are looked at (slot holders whatever their age)."""
    max_calls: int = 20_000
    queue_scan_limit: int = 1_000
    forget_after_s: float = 3600.0
    """Beats older than this are dropped from ``keys.CONTROL_WORKERS``."""


class Action(enum.StrEnum):
    """What a call in routing needs from the sweep."""

    NONE = "none"
    REQUEUE = "requeue"
    """Unclaimed: publish a new ``route_call``."""
    RESUME = "resume"
    """Claimed and cut off: publish ``route_call`` under the claim's task id."""
    HAND_OVER = "hand_over"
    """Accepted, maybe never handed to a runner: push it to the pending list (if absent)."""


@dataclass
class SweepReport:
    """The call ids one sweep acted on."""

    released: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    handed_over: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _seconds(record: CallRecord, name: str) -> float | None:
    raw = (record.model_extra or {}).get(name)
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def routing_action(
    record: CallRecord,
    now_s: float,
    beats: Mapping[str, float],
    trust_beats: bool,
    config: RecoveryConfig,
) -> Action:
    """What ``record``, a call in routing, needs now (the rules of the module docstring).

    ``beats``: control worker -> last beat; ``trust_beats``: whether a silent worker may
    be taken for dead (not right after an outage).
    """
    requeued_at = _seconds(record, "route_requeued_at")

    def since(at_s: float) -> float:
        return now_s - (at_s if requeued_at is None else max(at_s, requeued_at))

    if record.state is CallState.INCOMING:
        due = since(record.created_at) >= config.incoming_after_s
        return Action.REQUEUE if due else Action.NONE
    if record.state is not CallState.ACCEPTING:
        return Action.NONE
    if record.accepted_at is not None:
        due = since(record.accepted_at) >= config.handover_after_s
        return Action.HAND_OVER if due else Action.NONE
    if not (record.model_extra or {}).get("route_claim"):
        return Action.NONE
    ran_at = _seconds(record, "route_run_at")
    if ran_at is None:  # claimed by a version that did not note its runs
        ran_at = record.updated_at if record.updated_at is not None else record.created_at
    idle_s = since(ran_at)
    if idle_s >= config.stale_after_s:
        return Action.RESUME
    holder = str((record.model_extra or {}).get("route_worker") or "")
    beat = beats.get(holder)
    dead = trust_beats and beat is not None and now_s - beat >= config.dead_after_s
    return Action.RESUME if dead and idle_s >= config.resume_after_s else Action.NONE


class Recovery:
    """One control worker's part in recovery: beat, lead, sweep (see the module docstring).

    ``client`` should decode responses and have socket timeouts, so a tick cannot hang.
    """

    def __init__(
        self,
        client: redis.Redis,
        worker: str,
        config: RecoveryConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.worker = worker
        self.config = config or RecoveryConfig()
        self._redis = client
        self._clock = clock
        self._store = CallStore(client, clock=clock)
        self._admission = Admission(client, clock=clock)
        self._messages = TaskMessages()
        self._token = f"{worker}/{uuid.uuid4()}"
        self._lead = client.register_script(_LEAD)
        self._step_down = client.register_script(_STEP_DOWN)
        self._distrust_until_s = 0.0

    def tick(self) -> SweepReport | None:
        """Beat, and sweep if this worker holds the sweep lease; None if another does."""
        try:
            self.beat()
            return self.sweep() if self.lead() else None
        except Exception:
            self._distrust_until_s = self._clock() + self.config.dead_after_s
            raise

    def beat(self) -> None:
        self._redis.zadd(keys.CONTROL_WORKERS, {self.worker: self._clock()})

    def lead(self) -> bool:
        """Take or renew the sweep lease; True while this worker holds it."""
        ttl_ms = int(self.config.lock_ttl_s * 1000)
        return bool(self._lead(keys=[keys.RECOVERY_LOCK], args=[self._token, ttl_ms]))

    def step_down(self) -> None:
        """Give the sweep lease up (if held), so another worker takes over at once."""
        self._step_down(keys=[keys.RECOVERY_LOCK], args=[self._token])

    def sweep(self) -> SweepReport:
        """One pass over the calls in routing and the admission slots."""
        now_s = self._clock()
        config = self.config
        report = SweepReport()
        recent = {
            _text(member)
            for member in self._redis.zrevrangebyscore(
                keys.LIVE_CALLS, "+inf", now_s - config.window_s, start=0, num=config.max_calls
            )
        }
        held = {holder.call_id for holder in self._admission.holders()}
        call_ids = sorted(recent | held)
        pipe = self._redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hmget(keys.call_record(call_id), ["state", "updated_at"])
        routing, finished, live = [], [], []
        for call_id, (state, updated_at) in zip(call_ids, pipe.execute(), strict=True):
            if state is None or _text(state) in _TERMINAL:
                finished.append(call_id)
                # Whatever ended the call releases the slot itself, unless it died first.
                late = state is None or now_s - float(updated_at or 0) >= config.release_after_s
                if call_id in held and late and self._admission.release(call_id):
                    report.released.append(call_id)
            elif _text(state) in (CallState.INCOMING.value, CallState.ACCEPTING.value):
                routing.append(call_id)
            elif now_s - float(updated_at or 0) >= config.orphan_after_s:
                live.append(call_id)
        if stale := [call_id for call_id in finished if call_id in recent]:
            self._redis.zrem(keys.LIVE_CALLS, *stale)
        self._recover(routing, now_s, report)
        self._adopt_orphans(live, now_s, report)
        self._redis.zremrangebyscore(keys.CONTROL_WORKERS, "-inf", now_s - config.forget_after_s)
        if report.released:
            logger.warning("recovery: released slots of finished calls: %s", report.released)
        for what, ids in (
            ("re-queued unclaimed", report.requeued),
            ("resumed cut-off routings of", report.resumed),
            ("handed to runners again", report.handed_over),
            ("handed live calls no runner held to runners", report.orphans),
        ):
            if ids:
                logger.warning("recovery: %s %d calls: %s", what, len(ids), ", ".join(ids))
        return report

    def _recover(self, call_ids: Iterable[str], now_s: float, report: SweepReport) -> None:
        records = self._store.get_many(call_ids)
        if not records:
            return
        beats, trusted = self._beats(), self._trust_beats(now_s)
        due: dict[Action, list[CallRecord]] = {action: [] for action in Action}
        for record in records:
            due[routing_action(record, now_s, beats, trusted, self.config)].append(record)
        for record in self._unqueued(due[Action.REQUEUE] + due[Action.RESUME]):
            claim = None
            if record.state is CallState.ACCEPTING:
                claim = str((record.model_extra or {}).get("route_claim"))
            if self._publish(record, claim, now_s):
                (report.resumed if claim else report.requeued).append(record.id)
        accepted = [record.id for record in due[Action.HAND_OVER]]
        report.handed_over += self._hand_over(accepted, now_s, (CallState.ACCEPTING,))

    def _beats(self) -> dict[str, float]:
        pairs = cast("list[Any]", self._redis.zrange(keys.CONTROL_WORKERS, 0, -1, withscores=True))
        return {_text(member): float(score) for member, score in pairs}

    def _trust_beats(self, now_s: float) -> bool:
        if now_s < self._distrust_until_s:
            return False
        info = cast("dict[str, Any]", self._redis.info("server"))
        uptime_s = info.get("uptime_in_seconds", 0)
        return float(uptime_s) >= self.config.dead_after_s

    def _unqueued(self, records: list[CallRecord]) -> list[CallRecord]:
        """Those of ``records`` without a message in the control queue (none on a backlog)."""
        if not records:
            return []
        if cast("int", self._redis.llen(CONTROL_QUEUE)) > self.config.queue_scan_limit:
            logger.info("recovery: control queue backlog; nothing re-published this time")
            return []
        raws = cast("list[Any]", self._redis.lrange(CONTROL_QUEUE, 0, -1))
        messages = [_text(raw) for raw in raws]
        return [r for r in records if not any(r.id in message for message in messages)]

    def _publish(self, record: CallRecord, task_id: str | None, now_s: float) -> bool:
        # Noted first, and only if the call has not moved on since it was read.
        noted = self._store.update(record.id, {"route_requeued_at": now_s}, only_in=[record.state])
        if not noted.applied:
            return False
        message = self._messages.build(ROUTE_CALL_TASK, [record.id], CONTROL_QUEUE, task_id=task_id)
        # The consuming end: this caller has been waiting longer than anyone queued.
        self._redis.rpush(CONTROL_QUEUE, message)
        return True

    def _adopt_orphans(self, call_ids: list[str], now_s: float, report: SweepReport) -> None:
        """Live calls that no runner holds (a runner lost them and could not say so, e.g.
        while Redis was away) go back to the runners, which finish them: a call that has
        ended meanwhile is refused at attach and recorded as ended."""
        live = (CallState.ACTIVE, CallState.TRANSFERRING)
        report.orphans += self._hand_over(call_ids, now_s, live)

    def _hand_over(
        self, call_ids: list[str], now_s: float, states: tuple[CallState, ...]
    ) -> list[str]:
        """Push those of ``call_ids`` that no runner holds or is about to take (on the
        pending list) to the runners; the ids pushed.

        The pending list is read once (checking each call against it was a scan of the
        list per call, every second); longer than ``queue_scan_limit``, the runners are
        behind and nothing is pushed this time.
        """
        if not call_ids:
            return []
        limit = self.config.queue_scan_limit
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(keys.PENDING_CALLS)
        pipe.lrange(keys.PENDING_CALLS, 0, limit - 1)
        for call_id in call_ids:
            pipe.exists(keys.call_lease(call_id))
        length, pending, *leased = pipe.execute()
        if int(length) > limit:
            logger.info("recovery: runners' backlog; nothing handed over this time")
            return []
        waiting = {_text(raw) for raw in pending}
        handed = []
        for call_id, held in zip(call_ids, leased, strict=True):
            if held or call_id in waiting:
                continue
            noted = self._store.update(call_id, {"route_requeued_at": now_s}, only_in=states)
            if noted.applied:
                self._redis.rpush(keys.PENDING_CALLS, call_id)
                handed.append(call_id)
        return handed
