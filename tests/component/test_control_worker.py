"""Call control end to end: a real ``switchboard worker`` (Celery) on a real Redis, the
emulator behind a recording proxy (both on real uvicorn), tasks sent with ``send_task``.

Most tests write the incoming record with the store, as the ingress would, and send
the routing task; the webhook tests go through a real ``switchboard ingress`` instead.
The reject, refer and hang-up tasks are sent as commands would send them, routed to
the commands queue that the worker also consumes. One worker serves the whole module;
each test writes the policy it needs (the worker reloads it on change) and uses fresh
emulator calls, so tests do not see each other's calls. The broker's database is not
flushed between these tests: that would drop kombu's queue bindings under the running
worker.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from shared import keys
from shared.models import CallRecord, CallState
from shared.policy_file import load_policy
from shared.queues import (
    COMMANDS_QUEUE,
    CONTROL_QUEUE,
    HANGUP_CALL_TASK,
    REFER_CALL_TASK,
    REJECT_CALL_TASK,
    ROUTE_CALL_TASK,
)
from shared.settings import Settings
from shared.store import CallStore
from shared.task_message import TaskMessages
from tests.support.control import (
    RecordingProxy,
    create_incoming,
    policy_text,
    recording_proxy,
    write_policy,
)
from tests.support.emulator import EmulatorHandle, running_emulator
from tests.support.procs import Child, spawn, switchboard_argv, wait_until
from tests.support.session_check import check_against_sdk
from tests.support.webhook_sender import incoming_event, signed_headers, start_ingress
from workers.admission import Admission
from workers.celery_app import create_app
from workers.policy import CallFacts
from workers.session_body import session_body


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator(time_scale=0.05) as handle:
        yield handle


@pytest.fixture(scope="module")
def proxy(emu: EmulatorHandle) -> Iterator[RecordingProxy]:
    with recording_proxy(emu.base_url) as recording:
        yield recording


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    write_policy(path, policy_text())
    return path


@pytest.fixture(scope="module")
def worker(
    redis_server: str,
    emu: EmulatorHandle,
    proxy: RecordingProxy,
    policy_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Child]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server,
        "SWITCHBOARD_CONFIG": str(policy_path),
        "OPENAI_BASE_URL": f"{proxy.url}/v1",
        "OPENAI_API_KEY": emu.api_key,
        # The tests fill the house with slots of calls that have no record, which the
        # recovery sweep would free (tests/component/test_recovery.py covers it).
        "SWITCHBOARD_RECOVERY_EVERY_S": "0",
    }
    queues = f"{CONTROL_QUEUE},{COMMANDS_QUEUE}"
    argv = switchboard_argv("worker", "--queues", queues, "--concurrency", "2")
    child = spawn("control-worker", argv, tmp_path_factory.mktemp("worker"), env=env)
    try:
        wait_until(lambda: " ready." in child.tail(200), 60.0, "celery worker ready", child)
        yield child
    finally:
        child.stop()


@pytest.fixture(scope="module")
def ingress(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_ingress(tmp_path_factory.mktemp("ingress"), redis_server)
    try:
        yield url
    finally:
        child.stop()


@pytest.fixture(scope="module")
def celery_client(redis_server: str) -> Iterator[Celery]:
    app = create_app(Settings(redis_url=redis_server))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def rdb(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


class Harness:
    """What a test drives: the emulator, the proxy, the store and the publisher."""

    def __init__(
        self,
        emu: EmulatorHandle,
        proxy: RecordingProxy,
        rdb: redis.Redis,
        app: Celery,
        policy_path: Path,
        worker: Child,
    ) -> None:
        self.emu, self.proxy, self.rdb, self.app = emu, proxy, rdb, app
        self.policy_path, self.worker = policy_path, worker
        self.store = CallStore(rdb)
        self.admission = Admission(rdb)

    def incoming(
        self,
        scenario: str = "quick-question",
        from_: str = "+14155550100",
        to: str = "+18005550100",
    ) -> str:
        call_id = self.emu.place_call(scenario=scenario, from_=from_, to=to)
        create_incoming(self.store, call_id, from_, to)
        return call_id

    def route(self, call_id: str) -> str:
        task_id = str(uuid.uuid4())
        self.app.send_task(ROUTE_CALL_TASK, args=(call_id,), queue=CONTROL_QUEUE, task_id=task_id)
        return task_id

    def record_when(
        self, call_id: str, done: Any, what: str, timeout_s: float = 20.0
    ) -> CallRecord:
        seen: list[CallRecord] = []

        def check() -> bool:
            record = self.store.get(call_id)
            seen[:] = [record] if record is not None else []
            return record is not None and bool(done(record))

        wait_until(check, timeout_s, f"{what} for {call_id}", self.worker)
        return seen[0]

    def accepted(self, call_id: str) -> CallRecord:
        return self.record_when(call_id, lambda r: r.accepted_at is not None, "accept")

    def terminal(self, call_id: str) -> CallRecord:
        return self.record_when(call_id, lambda r: r.terminal, "a final state")

    def settled(self) -> None:
        """Every routing task finished: nothing queued, nothing delivered but unacknowledged."""

        def idle() -> bool:
            queued = self.rdb.llen(CONTROL_QUEUE) + self.rdb.llen(COMMANDS_QUEUE)
            return queued == 0 and self.rdb.hlen("unacked") == 0

        wait_until(idle, 20.0, "the control queue to drain", self.worker)

    def accepts(self, call_id: str) -> list[int]:
        return self.answers(call_id, "accept")

    def answers(self, call_id: str, endpoint: str) -> list[int]:
        """The statuses the API gave to ``endpoint`` requests for the call, in order."""
        return [e.status for e in self.proxy.to(f"/realtime/calls/{call_id}/{endpoint}")]

    def logged(self, text: str) -> None:
        """Wait until the worker's log shows ``text`` (how a task that changed nothing ends)."""
        wait_until(lambda: text in self.worker.tail(400), 20.0, repr(text), self.worker)

    def expected_body(self, record: CallRecord) -> dict[str, Any]:
        """What ``workers.session_body`` builds for this call with the test policy."""
        policy = load_policy(self.policy_path)
        profile = policy.profiles["support"]
        return session_body("support", profile, policy, CallFacts.from_record(record))


@pytest.fixture
def h(
    emu: EmulatorHandle,
    proxy: RecordingProxy,
    rdb: redis.Redis,
    celery_client: Celery,
    policy_path: Path,
    worker: Child,
) -> Iterator[Harness]:
    emu.set_faults(rest_5xx_rate=0.0, rest_429_rate=0.0, retry_after_s=0.05)
    write_policy(policy_path, policy_text())
    for holder in Admission(rdb).holders():
        Admission(rdb).release(holder.call_id)
    yield Harness(emu, proxy, rdb, celery_client, policy_path, worker)
    emu.set_faults(rest_5xx_rate=0.0, rest_429_rate=0.0)


def test_a_call_is_accepted_with_its_profile_body(h: Harness) -> None:
    call_id = h.incoming()
    h.route(call_id)
    record = h.accepted(call_id)

    assert record.state is CallState.ACCEPTING
    assert record.profile == "support"
    assert h.rdb.lrange(keys.PENDING_CALLS, 0, -1).count(call_id) == 1
    truth = h.emu.call(call_id, events=False)
    policy = load_policy(h.policy_path)
    expected = session_body(
        "support", policy.profiles["support"], policy, CallFacts.from_record(record)
    )
    assert truth["state"] == "active"
    assert truth["accept"] == expected
    assert truth["defects"] == []
    check_against_sdk(truth["accept"])
    assert "+14155550100" in truth["accept"]["instructions"]


@pytest.mark.parametrize(
    ("caller", "called", "code", "reason"),
    [
        ("+15550006660", "+18005550100", 603, "blocked"),
        ("+14155550100", "+18005550199", 480, "after_hours"),
    ],
)
def test_policy_rejections(h: Harness, caller: str, called: str, code: int, reason: str) -> None:
    call_id = h.incoming(from_=caller, to=called)
    h.route(call_id)
    record = h.terminal(call_id)
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        code,
        reason,
    )
    truth = h.emu.call(call_id, events=False)
    assert (truth["state"], truth["reject_status"]) == ("rejected", code)
    assert h.accepts(call_id) == []


def test_a_full_cluster_answers_486(h: Harness) -> None:
    write_policy(h.policy_path, policy_text(max_calls=1))
    h.admission.acquire("rtc_blocker", "support", max_calls=1, profile_cap=None)
    call_id = h.incoming()
    h.route(call_id)
    record = h.terminal(call_id)
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        486,
        "capacity",
    )
    assert h.emu.call(call_id, events=False)["reject_status"] == 486
    assert [x.call_id for x in h.admission.holders()] == ["rtc_blocker"]


def test_a_full_cluster_with_a_wait_accepts_once_a_slot_frees(h: Harness) -> None:
    write_policy(h.policy_path, policy_text(max_calls=1, max_wait_s=20))
    h.admission.acquire("rtc_blocker", "support", max_calls=1, profile_cap=None)
    call_id = h.incoming()
    h.route(call_id)
    # The call is claimed and keeps ringing while it waits; nothing is sent to the API.
    waiting = h.record_when(call_id, lambda r: "waiting_since" in (r.model_extra or {}), "a wait")
    assert waiting.state is CallState.ACCEPTING
    assert h.emu.call(call_id, events=False)["state"] == "ringing"
    assert h.accepts(call_id) == []

    h.admission.release("rtc_blocker")
    record = h.accepted(call_id)
    assert h.accepts(call_id) == [200]
    assert h.emu.call(call_id, events=False)["state"] == "active"
    assert [x.call_id for x in h.admission.holders()] == [call_id]
    assert record.accepted_at is not None


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
def test_the_same_route_task_five_times_accepts_exactly_once(h: Harness, mode: str) -> None:
    call_id = h.incoming()
    if mode == "sequential":
        task_ids = []
        for _ in range(5):
            task_ids.append(h.route(call_id))
            h.settled()
    else:
        start = threading.Barrier(5)
        task_ids = []
        lock = threading.Lock()

        def send() -> None:
            start.wait()
            task_id = h.route(call_id)
            with lock:
                task_ids.append(task_id)

        threads = [threading.Thread(target=send) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        h.settled()
    record = h.accepted(call_id)
    assert h.accepts(call_id) == [200]
    assert (record.model_extra or {})["route_claim"] in task_ids
    assert h.rdb.lrange(keys.PENDING_CALLS, 0, -1).count(call_id) == 1


def test_503_and_429_bursts_are_ridden_out(h: Harness) -> None:
    h.emu.set_faults(rest_5xx_rate=1.0, retry_after_s=0.2)
    call_id = h.incoming()
    h.route(call_id)
    wait_until(lambda: h.accepts(call_id).count(503) >= 2, 10.0, "a 503 burst", h.worker)
    h.emu.set_faults(rest_5xx_rate=0.0, rest_429_rate=1.0)
    wait_until(lambda: h.accepts(call_id).count(429) >= 2, 10.0, "a 429 burst", h.worker)
    h.emu.set_faults(rest_429_rate=0.0)

    record = h.accepted(call_id)
    assert record.state is CallState.ACCEPTING
    statuses = h.accepts(call_id)
    assert statuses[-1] == 200
    assert statuses.count(200) == 1
    assert set(statuses[:-1]) == {503, 429}
    # Retry-After (0.2 s) is a floor between attempts
    times = [e.at_s for e in h.proxy.to(f"/realtime/calls/{call_id}/accept")]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.18
    assert h.emu.call(call_id, events=False)["state"] == "active"


def test_a_caller_who_hung_up_is_recorded_once_without_retries(h: Harness) -> None:
    call_id = h.incoming(scenario="hang-up-early")
    h.emu.wait_for_call(call_id, lambda truth: truth["state"] == "missed", what="caller gives up")
    h.route(call_id)
    record = h.terminal(call_id)
    h.settled()
    assert (record.state, record.end_reason) == (CallState.ENDED, "caller_gone")
    assert h.accepts(call_id) == [404]
    assert h.admission.holders() == []
    assert call_id not in h.rdb.lrange(keys.PENDING_CALLS, 0, -1)


def test_a_changed_policy_applies_without_a_restart(h: Harness) -> None:
    changed = policy_text().replace(
        "routes:\n",
        "routes:\n  - match: {called: '+18005550123'}\n"
        "    action: {type: reject, code: 410, reason: number_retired}\n",
    )
    write_policy(h.policy_path, changed)
    call_id = h.incoming(to="+18005550123")
    h.route(call_id)
    record = h.terminal(call_id)
    assert (record.reject_code, record.end_reason) == (410, "number_retired")

    # A broken edit keeps the last good policy: the next call is still routed by it.
    write_policy(h.policy_path, changed.replace("code: 410", "code: 4100"))
    again = h.incoming(to="+18005550123")
    h.route(again)
    assert h.terminal(again).reject_code == 410
    wait_until(lambda: "keeping the last good one" in h.worker.tail(400), 10.0, "the log", h.worker)


def test_a_waiting_call_enqueued_like_the_ingress_does_is_accepted(h: Harness) -> None:
    # The ingress LPUSHes a ready-made message instead of calling send_task; the task's
    # retries while waiting must work from that envelope too.
    write_policy(h.policy_path, policy_text(max_calls=1, max_wait_s=20))
    h.admission.acquire("rtc_blocker", "support", max_calls=1, profile_cap=None)
    call_id = h.incoming()
    h.rdb.lpush(CONTROL_QUEUE, TaskMessages().build(ROUTE_CALL_TASK, [call_id], CONTROL_QUEUE))
    h.record_when(call_id, lambda r: "waiting_since" in (r.model_extra or {}), "a wait")
    h.admission.release("rtc_blocker")
    h.accepted(call_id)
    assert h.accepts(call_id) == [200]


def test_a_signed_webhook_through_the_ingress_is_accepted_with_the_profile_body(
    h: Harness, ingress: str
) -> None:
    call_id = h.emu.place_call(scenario="quick-question")
    body = incoming_event(call_id)
    with httpx.Client(base_url=ingress, timeout=10.0) as http:
        signed = signed_headers(body, f"wh_{call_id}")
        answer = http.post("/webhooks/openai", content=body, headers=signed)
    assert (answer.status_code, answer.json()) == (200, {"result": "queued"})

    record = h.accepted(call_id)
    assert (record.from_, record.to) == ("+14155550100", "+18005550100")
    assert record.webhook_id == f"wh_{call_id}"
    assert record.profile == "support"
    truth = h.emu.call(call_id, events=False)
    assert truth["state"] == "active"
    assert truth["accept"] == h.expected_body(record)
    check_against_sdk(truth["accept"])
    assert truth["defects"] == []
    assert "audio" in truth["accept"]
    assert "format" not in truth["accept"]["audio"].get("input", {})
    assert "format" not in truth["accept"]["audio"].get("output", {})
    assert h.accepts(call_id) == [200]


def test_one_delivery_sent_eleven_ways_is_accepted_once(h: Harness, ingress: str) -> None:
    call_id = h.emu.place_call(scenario="quick-question")
    body = incoming_event(call_id)
    headers = signed_headers(body, f"wh_{call_id}")

    def send(content: bytes, signed: dict[str, str]) -> str:
        with httpx.Client(base_url=ingress, timeout=10.0) as http:
            answer = http.post("/webhooks/openai", content=content, headers=signed)
        assert answer.status_code == 200
        return str(answer.json()["result"])

    results = [send(body, headers) for _ in range(5)]
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results += list(pool.map(lambda _: send(body, headers), range(5)))
    # OpenAI's redelivery of the same call under a new webhook id.
    results.append(send(body, signed_headers(body, f"wh_{call_id}_again")))

    assert sorted(results) == ["duplicate"] * 10 + ["queued"]
    h.accepted(call_id)
    h.settled()
    assert h.accepts(call_id) == [200]
    truth = h.emu.call(call_id, events=False)
    assert truth["state"] == "active"
    assert truth["defects"] == []
    assert h.rdb.lrange(keys.PENDING_CALLS, 0, -1).count(call_id) == 1


def test_the_reject_task_refuses_a_ringing_call_once(h: Harness) -> None:
    call_id = h.incoming()
    h.app.send_task(REJECT_CALL_TASK, args=(call_id, 486, "busy"))
    record = h.terminal(call_id)
    assert (record.state, record.reject_code, record.end_reason) == (
        CallState.REJECTED,
        486,
        "busy",
    )
    truth = h.emu.call(call_id, events=False)
    assert (truth["state"], truth["reject_status"]) == ("rejected", 486)
    assert h.answers(call_id, "reject") == [200]
    # A routing task for it afterwards finds it decided: no accept is attempted.
    h.route(call_id)
    h.settled()
    assert h.accepts(call_id) == []
    assert h.admission.holders() == []


def test_the_reject_task_leaves_an_answered_call_alone(h: Harness) -> None:
    call_id = h.incoming()
    h.route(call_id)
    h.accepted(call_id)
    h.app.send_task(REJECT_CALL_TASK, args=(call_id, 486))
    h.logged(f"reject {call_id}: not taken")
    assert h.answers(call_id, "reject") == []
    assert h.emu.call(call_id, events=False)["state"] == "active"
    assert [x.call_id for x in h.admission.holders()] == [call_id]


def test_the_refer_task_transfers_an_answered_call(h: Harness) -> None:
    call_id = h.incoming()
    h.route(call_id)
    h.accepted(call_id)
    h.app.send_task(REFER_CALL_TASK, args=(call_id, "human"))
    truth = h.emu.wait_for_call(
        call_id, lambda t: t["refer_target"] is not None, what="the transfer"
    )
    assert truth["refer_target"] == "sip:agent@pbx.example.com"
    assert h.answers(call_id, "refer") == [200]


def test_the_hangup_task_ends_a_call_and_a_repeat_is_harmless(h: Harness) -> None:
    call_id = h.incoming()
    h.route(call_id)
    h.accepted(call_id)
    h.app.send_task(HANGUP_CALL_TASK, args=(call_id,))
    truth = h.emu.wait_for_call(call_id, lambda t: t["state"] == "ended", what="the hang-up")
    assert truth["ended_by"] == "hangup"
    h.app.send_task(HANGUP_CALL_TASK, args=(call_id,))
    wait_until(lambda: len(h.answers(call_id, "hangup")) == 2, 20.0, "a second hang-up", h.worker)
    h.settled()
    # The repeat hears 404 (already over) and is not retried.
    assert h.answers(call_id, "hangup") == [200, 404]
