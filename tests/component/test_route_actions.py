"""``workers.actions`` in-process against the emulator and a real Redis (no Celery here).

The Celery worker tests cover the same paths end to end; these check each branch and
its records precisely, including the ones that are slow to provoke through a worker
(REST deadline, resuming a half-done task, an "already accepted" answer, a routing
racing a reject, an answer lost on the way back).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared import keys
from shared.errors import CallEnded, CallNotFound, InvalidRequest
from shared.models import CallState
from shared.policy_file import PolicySource
from shared.realtime_client import ClientConfig, RealtimeClient
from shared.retry import Backoff
from shared.store import CallStore
from tests.support.control import create_incoming, policy_text, write_policy
from tests.support.emulator import EmulatorHandle, running_emulator
from workers import actions
from workers.actions import Control, Outcome
from workers.admission import Admission
from workers.policy import CallFacts
from workers.session_body import session_body


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator(time_scale=0.05) as handle:
        yield handle


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    write_policy(path, policy_text())
    return path


def control_for(
    emu: EmulatorHandle,
    client: redis.Redis,
    policy_path: Path,
    transport: httpx.BaseTransport | None = None,
) -> Control:
    config = ClientConfig(deadline_s=0.5, backoff=Backoff(base_s=0.02, max_s=0.1))
    return Control(
        redis=client,
        store=CallStore(client),
        admission=Admission(client),
        realtime=RealtimeClient(emu.api_url, emu.api_key, config=config, transport=transport),
        policies=PolicySource(policy_path),
    )


@pytest.fixture
def ctl(emu: EmulatorHandle, redis_client: redis.Redis, policy_path: Path) -> Iterator[Control]:
    emu.set_faults(rest_5xx_rate=0.0, rest_429_rate=0.0)
    control = control_for(emu, redis_client, policy_path)
    try:
        yield control
    finally:
        control.realtime.close()


class LosesFirstAnswers(httpx.BaseTransport):
    """Real HTTP to the emulator, but the first answer to each of ``endpoints`` is lost.

    The request is carried out and its answer dropped (a read timeout), as when a
    connection dies on the way back; the emulator answers the repeat 404, as the real
    API does (docs: realtime-api.md, section 2.2).
    """

    def __init__(self, *endpoints: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._losing = set(endpoints)
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        self.sent.append(endpoint)
        response = self._inner.handle_request(request)
        response.read()
        if endpoint in self._losing:
            self._losing.discard(endpoint)
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def losing(emu: EmulatorHandle, redis_client: redis.Redis, policy_path: Path) -> Iterator[Any]:
    """Builds a ``Control`` whose REST client loses the first answer of some endpoints."""
    made: list[Control] = []

    def make(*endpoints: str) -> tuple[Control, LosesFirstAnswers]:
        transport = LosesFirstAnswers(*endpoints)
        made.append(control_for(emu, redis_client, policy_path, transport))
        return made[-1], transport

    emu.set_faults(rest_5xx_rate=0.0, rest_429_rate=0.0)
    try:
        yield make
    finally:
        for control in made:
            control.realtime.close()


def incoming(ctl: Control, emu: EmulatorHandle, **kwargs: str) -> str:
    scenario = kwargs.pop("scenario", "quick-question")
    call_id = emu.place_call(scenario=scenario, **kwargs)
    create_incoming(
        ctl.store, call_id, kwargs.get("from_", "+14155550100"), kwargs.get("to", "+18005550100")
    )
    return call_id


def test_an_accepted_call_is_handed_to_the_runners(ctl: Control, emu: EmulatorHandle) -> None:
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED

    record = ctl.store.get(call_id)
    assert record is not None
    assert record.state is CallState.ACCEPTING
    assert record.profile == "support"
    assert record.accepted_at is not None
    extra = record.model_extra or {}
    assert extra["route_claim"] == "task-1"
    assert extra["route"] == "everyone else"
    assert extra["greeting"] == "Hello +14155550100, how can I help?"
    assert ctl.redis.lrange(keys.PENDING_CALLS, 0, -1) == [call_id]
    assert [h.call_id for h in ctl.admission.holders()] == [call_id]

    truth = emu.call(call_id, events=False)
    policy = ctl.policies.current()
    expected = session_body(
        "support", policy.profiles["support"], policy, CallFacts.from_record(record)
    )
    assert truth["state"] == "active"
    assert truth["accept"] == expected
    assert truth["defects"] == []


def test_another_task_for_the_same_call_does_nothing(ctl: Control, emu: EmulatorHandle) -> None:
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED
    assert actions.route_call(ctl, call_id, claim="task-2").outcome is Outcome.DUPLICATE
    assert ctl.redis.llen(keys.PENDING_CALLS) == 1


def test_an_accepted_call_is_timed_in_the_cluster_setup_histogram(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu)
    # Received 0.3 s before this run, and the API takes 0.4 s to answer the accept:
    # setup is timed up to the accept request (0.3 s), not up to its answer (0.7 s).
    ctl.store.update(call_id, {"created_at": time.time() - 0.3})
    emu.set_faults(rest_latency_ms_min=400.0, rest_latency_ms_max=400.0)
    try:
        assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED
    finally:
        emu.set_faults(rest_latency_ms_min=0.0, rest_latency_ms_max=0.0)
    record = ctl.store.get(call_id)
    assert record is not None
    assert record.accepted_at is not None
    assert record.accepted_at - record.created_at >= 0.7
    cumulative = dict(ctl.books.cluster_totals().setup_histogram())
    assert (cumulative[0.25], cumulative[0.5], cumulative[math.inf]) == (0, 1, 1)


def test_the_same_task_run_again_resumes_without_a_second_accept(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu)
    actions.route_call(ctl, call_id, claim="task-1")
    # A redelivery after a crash between hand-over and ack: hand over again, accept once.
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED
    assert ctl.redis.lrange(keys.PENDING_CALLS, 0, -1) == [call_id, call_id]
    assert emu.call(call_id, events=False)["state"] == "active"


def test_an_accept_that_went_through_before_a_lost_answer_counts(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu)
    # An earlier run of this task claimed the call and accepted it, then died before
    # recording it; the resumed run hears 404 from the API, as for any repeated accept.
    ctl.store.claim(call_id, "route_claim", "task-1", {})
    answer = httpx.post(
        f"{emu.api_url}/realtime/calls/{call_id}/accept",
        json={"type": "realtime"},
        headers={"Authorization": f"Bearer {emu.api_key}"},
    )
    assert answer.status_code == 200
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED
    assert ctl.redis.lrange(keys.PENDING_CALLS, 0, -1) == [call_id]
    # The 404 might as well have meant the caller left: the record says it is unsure.
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.model_extra or {})[actions.ACCEPT_UNCONFIRMED] == "1"


def test_a_fresh_accept_is_confirmed(ctl: Control, emu: EmulatorHandle) -> None:
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.ACCEPTED
    record = ctl.store.get(call_id)
    assert record is not None
    assert actions.ACCEPT_UNCONFIRMED not in (record.model_extra or {})


def test_a_reject_that_went_through_before_the_task_was_cut_off_counts(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu, from_="+15550006660")
    ctl.store.claim(call_id, "route_claim", "task-1", {})
    ctl.realtime.reject(call_id, 603)  # the run that did this died before recording it
    assert actions.route_call(ctl, call_id, claim="task-1").outcome is Outcome.REJECTED
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.reject_code) == (CallState.REJECTED, 603)


def test_every_run_notes_its_worker_and_time_for_recovery(
    ctl: Control, emu: EmulatorHandle
) -> None:
    assert ctl.policies.path is not None
    write_policy(ctl.policies.path, policy_text(max_calls=0, max_wait_s=30))
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, "task-1", "w1@host").outcome is Outcome.WAITING
    assert actions.route_call(ctl, call_id, "task-2", "w2@host").outcome is Outcome.DUPLICATE
    first = ctl.store.get(call_id)
    assert first is not None
    assert (first.model_extra or {})["route_worker"] == "w1@host"
    assert actions.route_call(ctl, call_id, "task-1", "w3@host").outcome is Outcome.WAITING
    again = ctl.store.get(call_id)
    assert again is not None
    extra, before = again.model_extra or {}, first.model_extra or {}
    assert (extra["route_claim"], extra["route_worker"]) == ("task-1", "w3@host")
    assert float(extra["route_run_at"]) >= float(before["route_run_at"])


def test_a_missing_record_is_left_alone(ctl: Control) -> None:
    assert actions.route_call(ctl, "rtc_unknown", claim="t").outcome is Outcome.MISSING


@pytest.mark.parametrize(
    ("caller", "called", "code", "reason"),
    [
        ("+15550006660", "+18005550100", 603, "blocked"),
        ("+14155550100", "+18005550199", 480, "after_hours"),
    ],
)
def test_rejections_reach_the_caller_and_the_record(
    ctl: Control, emu: EmulatorHandle, caller: str, called: str, code: int, reason: str
) -> None:
    call_id = incoming(ctl, emu, from_=caller, to=called)
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.REJECTED
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        code,
        reason,
    )
    assert record.ended_at is not None
    assert emu.call(call_id, events=False)["reject_status"] == code
    assert ctl.redis.llen(keys.PENDING_CALLS) == 0


def test_a_full_house_rejects_with_486_and_a_wait_ends_when_a_slot_frees(
    ctl: Control, emu: EmulatorHandle, policy_path: Path
) -> None:
    write_policy(policy_path, policy_text(max_calls=1))
    ctl.admission.acquire("rtc_other", "support", max_calls=1, profile_cap=None)
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.REJECTED
    assert emu.call(call_id, events=False)["reject_status"] == 486

    write_policy(policy_path, policy_text(max_calls=1, max_wait_s=30))
    waiting = incoming(ctl, emu)
    result = actions.route_call(ctl, waiting, claim="t2")
    assert result.outcome is Outcome.WAITING
    assert result.retry_in_s == pytest.approx(0.1)
    assert emu.call(waiting, events=False)["state"] == "ringing"
    record = ctl.store.get(waiting)
    assert record is not None
    assert record.state is CallState.ACCEPTING  # claimed: duplicates stay out while it waits
    assert "waiting_since" in (record.model_extra or {})
    assert actions.route_call(ctl, waiting, claim="other").outcome is Outcome.DUPLICATE

    ctl.admission.release("rtc_other")
    assert actions.route_call(ctl, waiting, claim="t2").outcome is Outcome.ACCEPTED
    assert emu.call(waiting, events=False)["state"] == "active"


def test_a_caller_who_hung_up_is_recorded_once_and_frees_the_slot(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu, scenario="hang-up-early")
    emu.wait_for_call(call_id, lambda truth: truth["state"] == "missed", what="caller gives up")
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.CALLER_GONE
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.end_reason) == (CallState.ENDED, "caller_gone")
    assert ctl.admission.holders() == []
    assert ctl.redis.llen(keys.PENDING_CALLS) == 0


def test_a_deadline_spent_on_errors_fails_the_call_and_frees_the_slot(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu)
    emu.set_faults(rest_5xx_rate=1.0, retry_after_s=0.05)
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.FAILED
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.end_reason) == (CallState.FAILED, "error")
    assert "gave up after" in (record.error or "")
    assert "HTTP 503" in (record.error or "")
    assert ctl.admission.holders() == []


def test_refer_hangup_and_reject_verbs(ctl: Control, emu: EmulatorHandle) -> None:
    call_id = incoming(ctl, emu)
    actions.route_call(ctl, call_id, claim="t")
    with pytest.raises(InvalidRequest, match="unknown transfer target"):
        actions.refer_call(ctl, call_id, "nobody")
    assert emu.call(call_id, events=False)["refer_target"] is None
    assert actions.refer_call(ctl, call_id, "human") == "sip:agent@pbx.example.com"
    assert emu.call(call_id, events=False)["refer_target"] == "sip:agent@pbx.example.com"
    assert actions.hangup_call(ctl, call_id) is False  # the refer ended the call: 404

    other = incoming(ctl, emu)
    with pytest.raises(InvalidRequest, match="not answered yet"):
        actions.refer_call(ctl, other, "human")
    with pytest.raises(InvalidRequest, match="400-699"):
        actions.reject_call(ctl, other, 200, claim="cmd-1")
    unchanged = ctl.store.get(other)
    assert unchanged is not None
    assert unchanged.state is CallState.INCOMING
    assert actions.reject_call(ctl, other, 503, "maintenance", claim="cmd-1") is True
    record = ctl.store.get(other)
    assert record is not None
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        503,
        "maintenance",
    )
    truth = emu.call(other, events=False)
    assert (truth["state"], truth["reject_status"], truth["refer_target"]) == (
        "rejected",
        503,
        None,
    )
    # Decided: a second reject and a refer are refused without a request.
    assert actions.reject_call(ctl, other, 486, claim="cmd-2") is False
    with pytest.raises(CallEnded):
        actions.refer_call(ctl, other, "human")
    with pytest.raises(CallNotFound):
        actions.refer_call(ctl, "rtc_unknown", "human")
    assert emu.call(other, events=False)["reject_status"] == 503


def test_a_reject_leaves_a_call_another_task_holds_alone(
    ctl: Control, emu: EmulatorHandle, policy_path: Path
) -> None:
    write_policy(policy_path, policy_text(max_calls=1, max_wait_s=30))
    ctl.admission.acquire("rtc_blocker", "support", max_calls=1, profile_cap=None)
    waiting = incoming(ctl, emu)
    assert actions.route_call(ctl, waiting, claim="route-1").outcome is Outcome.WAITING
    ctl.admission.release("rtc_blocker")
    accepted = incoming(ctl, emu)
    assert actions.route_call(ctl, accepted, claim="route-2").outcome is Outcome.ACCEPTED

    for call_id, routing in ((waiting, "route-1"), (accepted, "route-2")):
        before = ctl.store.get(call_id)
        assert actions.reject_call(ctl, call_id, 486, claim="cmd") is False
        after = ctl.store.get(call_id)
        assert after == before
        assert after is not None
        assert (after.model_extra or {})["route_claim"] == routing
        assert emu.call(call_id, events=False)["reject_status"] is None
    assert emu.call(waiting, events=False)["state"] == "ringing"
    assert emu.call(accepted, events=False)["state"] == "active"
    # The accepted call keeps its slot: a reject that did not happen frees nothing.
    assert [h.call_id for h in ctl.admission.holders()] == [accepted]


def race(ctl: Control, call_id: str, route: str, reject: str, reject_first: bool) -> dict[str, Any]:
    """Run ``route_call`` and ``reject_call`` for one call at once; what each returned."""
    start = threading.Barrier(2)
    got: dict[str, Any] = {}

    def routing() -> None:
        start.wait()
        got["route"] = actions.route_call(ctl, call_id, claim=route).outcome

    def rejecting() -> None:
        start.wait()
        got["reject"] = actions.reject_call(ctl, call_id, 486, "busy", claim=reject)

    threads = [threading.Thread(target=routing), threading.Thread(target=rejecting)]
    for thread in reversed(threads) if reject_first else threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return got


def test_a_routing_racing_a_reject_lets_exactly_one_act(ctl: Control, emu: EmulatorHandle) -> None:
    emu.set_faults(rest_latency_ms_min=5.0, rest_latency_ms_max=30.0)
    try:
        results = {}
        for i in range(8):
            call_id = incoming(ctl, emu)
            results[call_id] = race(ctl, call_id, f"route-{i}", f"rej-{i}", reject_first=i % 2 == 1)
    finally:
        emu.set_faults(rest_latency_ms_min=0.0, rest_latency_ms_max=0.0)

    holders = {h.call_id for h in ctl.admission.holders()}
    for call_id, got in results.items():
        record = ctl.store.get(call_id)
        truth = emu.call(call_id, events=False)
        assert record is not None
        if got["reject"]:
            assert got["route"] is Outcome.DUPLICATE
            assert (record.state, record.reject_code, record.end_reason) == (
                CallState.REJECTED,
                486,
                "busy",
            )
            assert (truth["state"], truth["reject_status"], truth["accept"]) == (
                "rejected",
                486,
                None,
            )
            assert call_id not in holders
        else:
            assert got["route"] is Outcome.ACCEPTED
            assert record.state is CallState.ACCEPTING
            assert record.accepted_at is not None
            assert (truth["state"], truth["reject_status"]) == ("active", None)
            assert call_id in holders


def test_an_accept_whose_answer_was_lost_counts_as_accepted(
    losing: Any, emu: EmulatorHandle
) -> None:
    ctl, transport = losing("accept")
    call_id = incoming(ctl, emu)
    # The first accept goes through but its answer is lost; the retry hears 404.
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.ACCEPTED
    assert transport.sent == ["accept", "accept"]
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.end_reason) == (CallState.ACCEPTING, None)
    assert record.accepted_at is not None
    assert ctl.redis.lrange(keys.PENDING_CALLS, 0, -1) == [call_id]
    assert [h.call_id for h in ctl.admission.holders()] == [call_id]
    assert emu.call(call_id, events=False)["state"] == "active"


def test_a_caller_gone_before_an_accept_without_a_lost_answer_is_still_gone(
    losing: Any, emu: EmulatorHandle
) -> None:
    ctl, transport = losing("reject")  # loses nothing on the accept path
    call_id = incoming(ctl, emu, scenario="hang-up-early")
    emu.wait_for_call(call_id, lambda truth: truth["state"] == "missed", what="caller gives up")
    assert actions.route_call(ctl, call_id, claim="t").outcome is Outcome.CALLER_GONE
    assert transport.sent == ["accept"]
    assert ctl.redis.llen(keys.PENDING_CALLS) == 0


def test_verbs_whose_answer_was_lost_count_as_done(losing: Any, emu: EmulatorHandle) -> None:
    ctl, transport = losing("reject", "refer", "hangup")
    rejected = incoming(ctl, emu)
    assert actions.reject_call(ctl, rejected, 480, "closed", claim="cmd") is True
    record = ctl.store.get(rejected)
    assert record is not None
    assert (record.state, record.reject_code) == (CallState.REJECTED, 480)
    assert ctl.admission.holders() == []

    referred = incoming(ctl, emu)
    assert actions.route_call(ctl, referred, claim="t").outcome is Outcome.ACCEPTED
    assert actions.refer_call(ctl, referred, "human") == "sip:agent@pbx.example.com"
    assert emu.call(referred, events=False)["refer_target"] == "sip:agent@pbx.example.com"

    hung_up = incoming(ctl, emu)
    assert actions.route_call(ctl, hung_up, claim="t").outcome is Outcome.ACCEPTED
    assert actions.hangup_call(ctl, hung_up) is True
    assert emu.call(hung_up, events=False)["ended_by"] == "hangup"
    assert transport.sent == [
        *("reject", "reject"),
        *("accept", "refer", "refer"),
        *("accept", "hangup", "hangup"),
    ]


def test_a_reject_cut_off_after_its_claim_is_finished_by_a_resumed_routing(
    ctl: Control, emu: EmulatorHandle
) -> None:
    call_id = incoming(ctl, emu)
    # What reject_call writes with its claim, before a crash cut it off.
    fields = {
        "route_worker": "w1",
        "route_run_at": 1.0,
        actions.REQUESTED_REJECT_CODE: 486,
        actions.REQUESTED_REJECT_REASON: "busy",
    }
    ctl.store.claim(call_id, "route_claim", "rej-1", fields)
    # Recovery resumes the claim with route_call under the same task id.
    assert actions.route_call(ctl, call_id, claim="rej-1").outcome is Outcome.REJECTED
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        486,
        "busy",
    )
    assert emu.call(call_id, events=False)["state"] == "rejected"
    assert ctl.admission.holders() == []


def test_a_task_that_broke_off_fails_only_its_own_call(ctl: Control, emu: EmulatorHandle) -> None:
    assert ctl.policies.path is not None
    write_policy(ctl.policies.path, policy_text(max_calls=1, max_wait_s=30))
    ctl.admission.acquire("rtc_blocker", "support", max_calls=1, profile_cap=None)
    call_id = incoming(ctl, emu)
    assert actions.route_call(ctl, call_id, claim="t1").outcome is Outcome.WAITING

    assert actions.abandon(ctl, call_id, "someone-else", "boom") is False
    assert actions.abandon(ctl, call_id, "t1", "RuntimeError: boom") is True
    record = ctl.store.get(call_id)
    assert record is not None
    assert (record.state, record.error) == (CallState.FAILED, "RuntimeError: boom")
    assert [h.call_id for h in ctl.admission.holders()] == ["rtc_blocker"]


def test_leaked_slots_of_finished_calls_are_released(ctl: Control, emu: EmulatorHandle) -> None:
    live = incoming(ctl, emu)
    assert actions.route_call(ctl, live, claim="t").outcome is Outcome.ACCEPTED
    finished = incoming(ctl, emu)
    actions.route_call(ctl, finished, claim="t")
    ctl.store.transition(finished, CallState.ACCEPTING, CallState.ENDED, {"end_reason": "error"})
    ctl.admission.acquire("rtc_no_record", "support", max_calls=None, profile_cap=None)

    assert sorted(actions.release_finished_slots(ctl)) == sorted([finished, "rtc_no_record"])
    assert [h.call_id for h in ctl.admission.holders()] == [live]
    assert actions.release_finished_slots(ctl) == []
