"""Call-control actions as plain functions: what the Celery tasks do, without Celery.

``route_call`` is the path of every incoming call: claim it, decide, take an admission
slot, accept or reject over REST, record the outcome, hand accepted calls to the
session runners. ``reject_call``, ``refer_call`` and ``hangup_call`` are the single
REST verbs for commands.

Exactly once: the first task to move the call ``incoming -> accepting`` writes its task
id into the record as ``route_claim``; any other task for the call does nothing. That
holds for ``reject_call`` too: it claims the call the same way before any REST request,
so a routing task and a reject never both act on one call. The same task id comes back
when Celery redelivers or retries that task, so a worker that died mid-way, or a call
that waits for a slot, resumes instead of being dropped. Every run also writes
``route_worker`` (the Celery node running it) and ``route_run_at``: that is how
``workers.recovery`` tells a routing cut off by a dead worker or a lost message from
one still under way, and resumes it by publishing ``route_call`` again under the same
id. A reject notes the code and reason it is to give (``requested_reject_code``,
``requested_reject_reason``) with its claim, so a ``route_call`` resuming it finishes
that reject rather than deciding afresh.

Admission slots are released once the call's record is over (terminal), never by a
task whose state change did not happen while the call is live.

Lost answers: a REST attempt whose answer was lost may have been carried out; the real
API answers the repeat with 404 (``CallGone.after_lost_answer``). So may the attempt of
an earlier run of the same task (a resumed claim: the worker died before recording).
A 404 after either is ambiguous: an accept that ends so counts as accepted (the call is
handed to the runners, and if the caller was in fact gone the runner's attach is refused
with 404 and the runner records it, ``caller_gone``); such a call's record carries
``accept_unconfirmed``. A reject that ends so counts as rejected.

Hand-over to runners: the record gets ``profile``, ``route``, ``accepted_at`` and the
rendered ``greeting`` (if the profile has one), then the call id is LPUSHed onto
``shared.keys.PENDING_CALLS``; the state stays ``accepting`` until a runner attaches.

Errors: ``RetryableError`` and Redis connection errors propagate for the task to retry
(safe, see above); the REST client has already retried within its own deadline, so a
``DeadlineExceeded`` is final: the call is marked failed and its slot released.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import redis

from shared import keys
from shared.accounting import Accounting
from shared.errors import (
    CallEnded,
    CallGone,
    CallNotFound,
    ConfigError,
    FatalError,
    InvalidRequest,
)
from shared.models import TERMINAL_STATES, CallRecord, CallState, EndReason
from shared.policy_file import PolicySource
from shared.profile import valid_transfer_uri
from shared.realtime_client import RealtimeClient
from shared.settings import Settings
from shared.store import CallStore, ChangeResult, ClaimOutcome
from workers.admission import Admission
from workers.policy import Accept, CallFacts, Load, Reject, Wait, decide, when_full
from workers.session_body import render_for_call, session_body

if TYPE_CHECKING:
    from workers.worker_metrics import WorkerMetrics

logger = logging.getLogger(__name__)


@dataclass
class Control:
    """What the control actions use, built once per worker process."""

    redis: redis.Redis
    store: CallStore
    admission: Admission
    realtime: RealtimeClient
    policies: PolicySource
    clock: Callable[[], float] = time.time
    metrics: WorkerMetrics | None = None
    books: Accounting = field(init=False)
    """The cluster's outcome counters (``shared.accounting``)."""

    def __post_init__(self) -> None:
        self.books = Accounting(self.redis)

    @classmethod
    def from_settings(cls, settings: Settings, metrics: WorkerMetrics | None = None) -> Control:
        if not settings.redis_url:
            raise ConfigError("SWITCHBOARD_REDIS_URL is not set")
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        observe = metrics.observe_rest if metrics is not None else None
        return cls(
            redis=client,
            store=CallStore(client),
            admission=Admission(client),
            realtime=RealtimeClient.from_settings(settings, observe=observe),
            policies=PolicySource(settings.config),
            metrics=metrics,
        )

    def close(self) -> None:
        self.realtime.close()
        self.redis.close()


class Outcome(StrEnum):
    """What ``route_call`` did with the call."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    WAITING = "waiting"
    DUPLICATE = "duplicate"
    MISSING = "missing"
    CALLER_GONE = "caller_gone"
    FAILED = "failed"


@dataclass(frozen=True)
class RouteResult:
    """The outcome, and for ``WAITING`` when to try again."""

    outcome: Outcome
    retry_in_s: float | None = None


ACCEPT_UNCONFIRMED = "accept_unconfirmed"
"""Record field of a call taken as accepted on an ambiguous 404 (the API may not have it)."""


def route_call(ctl: Control, call_id: str, claim: str, worker: str = "") -> RouteResult:
    """Route one incoming call; ``claim`` is the id of the task doing it, on ``worker``."""
    # One round trip: claimed now or resumed under the same task id, the record comes back.
    run = {"route_worker": worker, "route_run_at": ctl.clock()}
    claimed = ctl.store.claim(call_id, "route_claim", claim, run)
    record = claimed.record
    if record is None:
        exists = claimed.outcome is ClaimOutcome.TAKEN
        logger.info("route %s: %s", call_id, "already claimed" if exists else "no such call")
        return RouteResult(Outcome.DUPLICATE if exists else Outcome.MISSING)
    if record.accepted_at is not None:  # accepted by an earlier run of this very task
        ctl.redis.lpush(keys.PENDING_CALLS, call_id)
        return RouteResult(Outcome.ACCEPTED)
    requested = requested_reject(record)
    # A resumed claim's earlier run may have sent its accept or reject already.
    resumed = claimed.outcome is ClaimOutcome.RESUMED
    if requested is not None:  # the claim is a reject command's, resumed by recovery
        return RouteResult(_reject(ctl, call_id, requested, resumed=resumed))
    facts = CallFacts.from_record(record)
    policy = ctl.policies.current()
    now = dt.datetime.fromtimestamp(ctl.clock(), dt.UTC)
    capacity = policy.capacity
    # Without caps there is nothing to compare against: skip the round trip.
    capped = capacity.max_calls is not None or bool(capacity.per_profile)
    load = ctl.admission.load(capacity.per_profile) if capped else Load()
    decision = decide(facts, policy, now, load)
    if isinstance(decision, Accept):
        grant = ctl.admission.acquire(
            call_id,
            decision.profile,
            max_calls=policy.capacity.max_calls,
            profile_cap=policy.profile_cap(decision.profile),
        )
        if not grant.granted:
            decision = when_full(facts, policy, decision.profile, now, decision.route)
    if isinstance(decision, Wait):
        if "waiting_since" not in (record.model_extra or {}):
            # Written once, so operators can see calls ringing for want of a slot.
            ctl.store.update(call_id, {"waiting_since": ctl.clock()}, only_in=[CallState.ACCEPTING])
            logger.info("route %s: no free slot, waiting", call_id)
        return RouteResult(Outcome.WAITING, decision.retry_in_s)
    if isinstance(decision, Reject):
        return RouteResult(_reject(ctl, call_id, decision, resumed=resumed))
    profile = policy.profiles[decision.profile]
    body = session_body(decision.profile, profile, policy, facts)
    # Call setup as its target reads: webhook in -> accept request sent (the same figure
    # for Prometheus and for the cluster histogram of ``switchboard stats``).
    setup_s = max(0.0, ctl.clock() - record.created_at)
    if ctl.metrics is not None:
        ctl.metrics.call_setup_s.observe(setup_s)
    outcome, unconfirmed = _accept(ctl, call_id, body, resumed=resumed)
    if outcome is not Outcome.ACCEPTED:
        return RouteResult(outcome)
    greeting = (
        render_for_call(profile.greeting, facts, decision.profile) if profile.greeting else None
    )
    accepted_at = ctl.clock()
    fields = {
        "profile": decision.profile,
        "route": decision.route,
        "accepted_at": accepted_at,
        "greeting": greeting,
    }
    if unconfirmed:
        fields[ACCEPT_UNCONFIRMED] = True
    ctl.store.update_and_push(
        call_id, fields, only_in=[CallState.ACCEPTING], queue=keys.PENDING_CALLS
    )
    logger.info("route %s: accepted with profile %s", call_id, decision.profile)
    _count(ctl, call_id, "accepted", decision.profile, setup_s=setup_s)
    return RouteResult(Outcome.ACCEPTED)


def _accept(
    ctl: Control, call_id: str, body: dict[str, object], *, resumed: bool
) -> tuple[Outcome, bool]:
    """The outcome, and whether an accepted call's accept is unconfirmed (an ambiguous
    404: see the module docstring)."""
    try:
        ctl.realtime.accept(call_id, body)
    except CallGone as err:
        if not (err.after_lost_answer or resumed):
            return _give_up(ctl, call_id, err), False
        # An attempt of ours may have answered the call; the runner's attach finds out.
        logger.warning("route %s: %s; taken as accepted", call_id, err)
        return Outcome.ACCEPTED, True
    except FatalError as err:
        return _give_up(ctl, call_id, err), False
    except BaseException:
        ctl.admission.release(call_id)
        raise
    return Outcome.ACCEPTED, False


def _reject(ctl: Control, call_id: str, decision: Reject, *, resumed: bool) -> Outcome:
    """Refuse a call whose claim this run holds, then record it and free any slot.

    A retried run may hold a slot from before a policy reload; it is freed with the
    state change, as a rejected call holds none.
    """
    try:
        ctl.realtime.reject(call_id, decision.code)
    except CallGone as err:
        if not (err.after_lost_answer or resumed):
            return _give_up(ctl, call_id, err)
        logger.warning("route %s: %s; taken as rejected", call_id, err)
    except FatalError as err:
        return _give_up(ctl, call_id, err)
    fields = {
        "end_reason": decision.reason,
        "reject_code": decision.code,
        "route": decision.route,
        "ended_at": ctl.clock(),
    }
    change = _finish(ctl, call_id, CallState.REJECTED, fields)
    if change.applied:
        logger.info("route %s: rejected %d (%s)", call_id, decision.code, decision.reason)
        _count(ctl, call_id, "rejected", None, decision.reason)
    return Outcome.REJECTED


def _give_up(ctl: Control, call_id: str, err: FatalError) -> Outcome:
    """Record a call that could not be accepted or rejected, and free its slot."""
    now_s = ctl.clock()
    if isinstance(err, CallGone):
        fields: dict[str, object] = {"end_reason": EndReason.CALLER_GONE, "ended_at": now_s}
        if _finish(ctl, call_id, CallState.ENDED, fields).applied:
            logger.info("route %s: the caller is gone", call_id)
            _count(ctl, call_id, "ended", None, EndReason.CALLER_GONE.value)
        return Outcome.CALLER_GONE
    fields = {"end_reason": EndReason.ERROR, "error": str(err), "ended_at": now_s}
    if _finish(ctl, call_id, CallState.FAILED, fields).applied:
        logger.error("route %s: failed: %s", call_id, err)
        _count(ctl, call_id, "failed", None, EndReason.ERROR.value)
    return Outcome.FAILED


def _finish(
    ctl: Control, call_id: str, to_state: CallState, fields: dict[str, object]
) -> ChangeResult:
    """Move a claimed call from ``accepting`` to ``to_state``; free its slot once it is over.

    The slot goes only when the record is terminal (by this change or an earlier one)
    or gone: a change that did not apply to a live call leaves that call's slot alone.
    """
    change = ctl.store.transition(call_id, CallState.ACCEPTING, to_state, fields)
    if change.state is None or change.state in TERMINAL_STATES:
        ctl.admission.release(call_id)
    return change


def _count(
    ctl: Control,
    call_id: str,
    outcome: str,
    profile: str | None,
    reason: str | None = None,
    *,
    setup_s: float | None = None,
) -> None:
    """Count a call outcome once (an accepted one with its setup latency); losing a count
    is better than failing the call."""
    try:
        ctl.books.count_outcome(outcome, profile, reason, call_id=call_id, setup_s=setup_s)
    except (ValueError, redis.RedisError) as exc:
        logger.warning("call %s: outcome %s not counted: %s", call_id, outcome, exc)


def abandon(ctl: Control, call_id: str, claim: str, error: str) -> bool:
    """Fail a call whose routing task ``claim`` broke off unexpectedly, and free its slot.

    Only the claim holder's call is touched, so a stray task cannot fail someone else's.
    """
    record = ctl.store.get(call_id)
    if record is None or (record.model_extra or {}).get("route_claim") != claim:
        return False
    fields: dict[str, object] = {
        "end_reason": EndReason.ERROR,
        "error": error[:300],
        "ended_at": ctl.clock(),
    }
    applied = _finish(ctl, call_id, CallState.FAILED, fields).applied
    if applied:
        _count(ctl, call_id, "failed", None, EndReason.ERROR.value)
    return applied


def release_finished_slots(ctl: Control) -> list[str]:
    """Free the slots of calls that ended without releasing them (a leak); returns their ids.

    Safe to run at any time from anywhere: a slot is freed only when its call's record
    is terminal or gone, never for a live call.
    """
    freed = []
    for holder in ctl.admission.holders():
        record = ctl.store.get(holder.call_id)
        if (record is None or record.terminal) and ctl.admission.release(holder.call_id):
            freed.append(holder.call_id)
    if freed:
        logger.warning("released %d leaked admission slots: %s", len(freed), ", ".join(freed))
    return freed


REQUESTED_REJECT_CODE = "requested_reject_code"
REQUESTED_REJECT_REASON = "requested_reject_reason"


def requested_reject(record: CallRecord) -> Reject | None:
    """The reject a ``reject_call`` claimed this call for, if one did."""
    extra = record.model_extra or {}
    code = extra.get(REQUESTED_REJECT_CODE)
    if code is None:
        return None
    return Reject(int(code), str(extra.get(REQUESTED_REJECT_REASON) or "rejected"))


def reject_call(
    ctl: Control,
    call_id: str,
    status_code: int,
    reason: str = "rejected",
    *,
    claim: str,
    worker: str = "",
) -> bool:
    """Refuse a call nobody has started to answer, as task ``claim`` on ``worker``.

    The call is claimed first, exactly as ``route_call`` claims it: False, with no REST
    request, if another task holds it, it was decided already, or there is no such call.
    Then the reject goes out and the call is recorded ``rejected``; True once it is. A
    run of the same ``claim`` (a retry) resumes; if the caller is gone (404) or the API
    refuses the reject, the call is recorded as for a routing that could not finish.
    """
    if not 400 <= status_code <= 699:
        raise InvalidRequest(f"SIP status {status_code} is not a final failure code (400-699)")
    if not reason:
        raise InvalidRequest("a reject needs a reason")
    run: dict[str, object] = {
        "route_worker": worker,
        "route_run_at": ctl.clock(),
        REQUESTED_REJECT_CODE: status_code,
        REQUESTED_REJECT_REASON: reason,
    }
    claimed = ctl.store.claim(call_id, "route_claim", claim, run)
    if claimed.record is None:
        logger.info("reject %s: not taken (%s)", call_id, claimed.outcome.value)
        return False
    resumed = claimed.outcome is ClaimOutcome.RESUMED
    return _reject(ctl, call_id, Reject(status_code, reason), resumed=resumed) is Outcome.REJECTED


def transfer_uri(ctl: Control, target: str) -> str:
    """A named transfer target's URI, or ``target`` itself if it is a sip:/tel: URI."""
    named = ctl.policies.current().transfer_targets.get(target)
    if named is not None:
        return named
    if valid_transfer_uri(target):
        return target
    raise InvalidRequest(f"unknown transfer target {target!r}: not a named target or URI")


def refer_call(ctl: Control, call_id: str, target: str) -> str:
    """Blind-transfer an answered call to ``target`` (a name or URI); returns the URI used.

    Refused before any REST request (``CallNotFound``, ``CallEnded``, ``InvalidRequest``)
    for a call with no record, one that is over, or one not answered yet. The state is
    left to the call's session runner, which sees the call end. A 404 after an attempt
    whose answer was lost means that attempt transferred the call: done.
    """
    uri = transfer_uri(ctl, target)
    record = ctl.store.get(call_id)
    if record is None:
        raise CallNotFound(f"no call {call_id}")
    if record.terminal:
        raise CallEnded(f"call {call_id} is over ({record.state.value})")
    if record.accepted_at is None and record.state in (CallState.INCOMING, CallState.ACCEPTING):
        raise InvalidRequest(f"call {call_id} is not answered yet: reject it instead")
    try:
        ctl.realtime.refer(call_id, uri)
    except CallGone as err:
        if not err.after_lost_answer:
            raise
        logger.info("refer %s: %s; taken as transferred", call_id, err)
    return uri


def hangup_call(ctl: Control, call_id: str) -> bool:
    """End a call over REST; False if it had already ended (404) before this request.

    Safe to repeat. A 404 after an attempt whose answer was lost is this request's own
    doing: True.
    """
    try:
        ctl.realtime.hangup(call_id)
    except CallGone as err:
        return err.after_lost_answer
    return True
