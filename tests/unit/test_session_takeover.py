"""A call taken over in the session core: what Redis knows beyond a lagging snapshot.

The previous worker's last snapshot may be up to one batch behind what it did; the
runner taking the call on feeds ``on_taken_over`` with the recorded command outcomes,
the command claims and the tool ledger. No command is applied twice; every tool-call id
left open is answered exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from shared.models import EndReason
from tests.support.session_driver import (
    Driver,
    creates,
    instructions,
    make_plan,
    of_type,
    sends,
    without_persist,
)
from workers.sessions.client_events import function_call_output, output_item_id
from workers.sessions.effects import (
    ClaimCommand,
    ClaimControl,
    CommandDone,
    Effect,
    EndCall,
    Hangup,
    OutputDelivered,
    Refer,
    RunTool,
    Send,
)
from workers.sessions.protocol import INTERRUPTED, SessionProtocol
from workers.sessions.tools import UNKNOWN_OUTCOME, FunctionCall, LedgerEntry


def _taken_over(
    before: Driver,
    *,
    results: Mapping[str, tuple[bool, str]] | None = None,
    claimed: Iterable[str] = (),
    ledger: Mapping[str, LedgerEntry] | None = None,
    control: ClaimControl | None = None,
) -> tuple[Driver, list[Effect]]:
    """A new core restored from ``before``'s snapshot, told what Redis knows."""
    core = SessionProtocol.restore(before.plan, before.core.snapshot())
    after = Driver(before.plan, core=core)
    after.now = before.now + 3.0
    effects = core.on_taken_over(results or {}, claimed, ledger or {}, after.now, control=control)
    after.log.extend(effects)
    return after, effects


def _outputs(effects: list[Effect]) -> list[tuple[str, str]]:
    return [
        (event["item"]["call_id"], event["item"]["output"])
        for event in sends(effects)
        if event["type"] == "conversation.item.create"
    ]


def test_a_valid_command_is_claimed_before_anything_it_causes() -> None:
    d = Driver()
    d.attach()
    for cid, kind, args in [
        ("cmd_s", "say", {"text": "Hello."}),
        ("cmd_u", "update", {"session": {"instructions": "Be brief."}}),
        ("cmd_t", "transfer", {"target": "sales"}),
    ]:
        effects = d.command(cid, kind, **args)
        assert effects[0] == ClaimCommand(cid), effects
        assert of_type(effects, Send) or of_type(effects, Refer)
    assert of_type(d.command("cmd_x", "dance"), ClaimCommand) == []  # invalid: nothing to claim


def test_a_command_with_a_recorded_outcome_is_not_applied_again() -> None:
    before = Driver()
    before.attach()
    after, effects = _taken_over(before, results={"cmd_1": (True, "will be said")})
    assert without_persist(effects) == []  # nothing to do until the command is read again
    after.attach(fresh=False)
    again = after.command("cmd_1", "say", text="Your order shipped.")
    assert creates(again) == []
    assert of_type(again, CommandDone) == [CommandDone("cmd_1", True, "will be said")]


def test_a_claimed_command_without_an_outcome_is_answered_as_interrupted() -> None:
    before = Driver()
    before.attach()
    after, effects = _taken_over(before, claimed=["cmd_1"])
    assert of_type(effects, CommandDone) == [CommandDone("cmd_1", False, INTERRUPTED)]
    after.attach(fresh=False)
    again = after.command("cmd_1", "transfer", target="sales")
    assert of_type(again, Refer) == []
    assert of_type(again, CommandDone) == [CommandDone("cmd_1", False, INTERRUPTED)]


def test_a_claimed_command_the_snapshot_holds_in_its_finale_goes_on() -> None:
    before = Driver()
    before.attach()
    [announce] = creates(before.command("cmd_1", "transfer", target="sales", announcement="Hi."))
    after, effects = _taken_over(before, claimed=["cmd_1"])
    assert of_type(effects, CommandDone) == []
    after.attach(fresh=False)
    assert after.command("cmd_1", "transfer", target="sales") == []  # still in flight
    tag = announce["response"]["metadata"]["switchboard_tag"]
    after.created("resp_a", tag=tag)
    done = after.done("resp_a")
    assert of_type(done, Refer) == [Refer("sip:sales@example.com")]


def test_a_finale_whose_command_has_an_outcome_already_ended_the_call() -> None:
    """The previous worker referred the caller after its last snapshot: no second refer."""
    before = Driver()
    before.attach()
    before.command("cmd_1", "transfer", target="sales", announcement="Connecting you.")
    after, effects = _taken_over(
        before, results={"cmd_1": (True, "referred to sip:sales@example.com")}
    )
    assert of_type(effects, EndCall) == [EndCall(EndReason.TRANSFERRED, "sip:sales@example.com")]
    assert of_type(after.log, Refer) == []
    assert after.core.next_deadline() is None


def test_a_refer_or_hangup_is_claimed_right_before_it_goes_out() -> None:
    d = Driver()
    d.attach()
    d.created("resp_tool")
    d.function_call("call_1", "transfer_call", '{"target": "desk"}')
    effects = without_persist(d.done("resp_tool"))
    uri = "tel:+14155550123"
    assert effects[:2] == [
        ClaimControl("refer", EndReason.TRANSFERRED, uri, uri),
        Refer(uri),
    ]
    hangup = Driver(make_plan(finale_timeout_s=10))
    hangup.attach()
    hangup.command("cmd_1", "hangup", goodbye="Bye.")
    effects = hangup.at(10).tick()
    claim = ClaimControl("hangup", EndReason.OPERATOR_HANGUP, command_id="cmd_1")
    assert of_type(effects, ClaimControl) == [claim]
    assert effects.index(claim) + 1 == effects.index(Hangup())


def _transfer_call_pending() -> Driver:
    """A call whose ``transfer_call`` waits for the agent's words to end (the snapshot)."""
    before = Driver(make_plan(finale_timeout_s=10))
    before.attach()
    before.created("resp_tool")
    before.event("output_audio_buffer.started", response_id="resp_tool")
    before.function_call("call_1", "transfer_call", '{"target": "sales"}')
    assert before.core.state.finale is not None
    return before


def test_a_refer_claimed_after_the_snapshot_is_not_sent_again() -> None:
    """The snapshot still holds the finale; the claim says its Refer went out."""
    uri = "sip:sales@example.com"
    claim = ClaimControl("refer", EndReason.TRANSFERRED, uri, uri)
    after, effects = _taken_over(_transfer_call_pending(), control=claim)
    assert of_type(effects, EndCall) == [EndCall(EndReason.TRANSFERRED, uri)]
    assert after.core.next_deadline() is None
    assert after.at(60.0).tick() == []
    assert after.attach(fresh=False) == []
    assert of_type(after.log, Refer) == []
    # Without the claim, the same snapshot refers the caller again at its deadline.
    again, _ = _taken_over(_transfer_call_pending())
    assert of_type(again.at(60.0).tick(), Refer) == [Refer(uri)]


def test_the_command_a_claimed_control_carried_out_is_done_not_interrupted() -> None:
    """The command and its Refer both came after the snapshot: only claims know them."""
    before = Driver()
    before.attach()
    uri = "sip:sales@example.com"
    claim = ClaimControl("refer", EndReason.TRANSFERRED, uri, uri, "cmd_1")
    after, effects = _taken_over(before, claimed=["cmd_1"], control=claim)
    assert of_type(effects, CommandDone) == [CommandDone("cmd_1", True, f"referred to {uri}")]
    assert of_type(effects, EndCall) == [EndCall(EndReason.TRANSFERRED, uri)]
    again = after.command("cmd_1", "transfer", target="sales")
    assert of_type(again, Refer) == []
    assert of_type(again, CommandDone) == [CommandDone("cmd_1", True, f"referred to {uri}")]


def test_a_hangup_claimed_at_the_hard_stop_ends_the_call_with_its_reason() -> None:
    before = Driver(make_plan(max_duration_s=30.0))
    before.attach()
    claim = ClaimControl("hangup", EndReason.MAX_DURATION)
    after, effects = _taken_over(before, control=claim)
    assert of_type(effects, EndCall) == [EndCall(EndReason.MAX_DURATION)]
    assert of_type(after.at(31.0).tick(), Hangup) == []
    assert of_type(after.log, Hangup) == []


def test_every_tool_call_left_open_is_answered_once() -> None:
    before = Driver()
    before.attach()
    before.function_call("call_settled", "weather")  # refused and answered before it
    before.function_call("call_running", "lookup")
    ledger = {
        "call_done": LedgerEntry("done", "lookup", True, '{"status": "shipped"}'),
        "call_running": LedgerEntry("running", "lookup"),
        "call_failed": LedgerEntry("done", "lookup", False, "backend down"),
        "call_delivered": LedgerEntry("delivered", "lookup", True, '{"x": 1}'),
        "call_settled": LedgerEntry("delivered", "weather", False, "{}"),
    }
    after, effects = _taken_over(before, ledger=ledger)
    assert sends(effects) == []  # not attached yet: held for the attach
    assert of_type(effects, RunTool) == []
    resent = after.attach(fresh=False)
    outputs = dict(_outputs(resent))
    assert sorted(outputs) == ["call_done", "call_failed", "call_running"]
    assert outputs["call_done"] == '{"status": "shipped"}'
    assert json.loads(outputs["call_failed"]) == {"error": "backend down"}
    assert json.loads(outputs["call_running"]) == {"error": UNKNOWN_OUTCOME}
    assert len(creates(resent)) == 1  # one follow-up for them all
    # Nothing is answered twice, nor timed out later.
    assert after.tool_result("call_running", "late") == []
    assert after.core.next_deadline() is None
    assert _outputs(after.at(60.0).tick()) == []


def test_an_output_sent_but_never_echoed_is_sent_again_with_the_same_item() -> None:
    """Its runner may have been killed with the frame still in its socket; the API keeps
    one item per id, so sending it again cannot double it."""
    before = Driver()
    before.attach()
    before.function_call("call_1", "lookup")
    before.done("resp_tool")
    [first] = _outputs(before.tool_result("call_1", "shipped"))
    after, _ = _taken_over(
        before, ledger={"call_1": LedgerEntry("answered", "lookup", True, "shipped")}
    )
    resent = after.attach(fresh=False)
    assert _outputs(resent) == [first]
    [output] = [event for event in sends(resent) if "item" in event]
    assert output == function_call_output("call_1", "shipped")
    assert output["item"]["id"] == output_item_id("call_1")
    assert len(creates(resent)) == 1
    # Client item ids are at most 32 characters, whatever the tool-call id.
    assert len(output_item_id("call_" + "x" * 200)) <= 32
    assert output_item_id("call_1") != output_item_id("call_2")


def test_the_api_echoing_an_output_marks_it_delivered() -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup")
    [output] = [e for e in sends(d.tool_result("call_1", "shipped")) if "item" in e]
    echoed = d.event("conversation.item.added", item={**output["item"], "status": "completed"})
    assert of_type(echoed, OutputDelivered) == [OutputDelivered("call_1")]
    other = {"id": "item_x", "type": "function_call_output", "call_id": "call_other"}
    assert of_type(d.event("conversation.item.added", item=other), OutputDelivered) == []
    message = {"id": "item_y", "type": "message", "role": "user", "content": []}
    assert d.event("conversation.item.added", item=message) == []


def test_a_tool_the_ledger_never_saw_claimed_is_run_by_the_next_worker() -> None:
    """The snapshot was saved between the tool call and its claim: it never ran."""
    before = Driver()
    before.attach()
    [run] = of_type(before.function_call("call_1", "lookup", '{"order": "A12"}'), RunTool)
    after, effects = _taken_over(before)
    assert of_type(effects, RunTool) == [run]
    assert after.core.next_deadline() == after.now + run.timeout_s
    after.attach(fresh=False)
    assert _outputs(after.tool_result("call_1", "shipped")) == [("call_1", "shipped")]


def test_a_tool_output_that_could_not_be_sent_goes_out_on_the_next_attach() -> None:
    d = Driver()
    d.attach()
    d.function_call("call_1", "lookup")
    d.done("resp_tool")
    output, follow_up = sends(d.tool_result("call_1", "shipped"))
    assert output == function_call_output("call_1", "shipped")
    assert follow_up["type"] == "response.create"
    d.core.on_unsent(output, d.now)  # the socket had closed under both
    d.closed("drop")
    resent = d.attach(fresh=False)
    assert _outputs(resent) == [("call_1", "shipped")]
    assert instructions(resent) == [None]  # and the response that reads it


def test_a_function_call_left_requested_is_handled_as_if_the_next_worker_heard_it() -> None:
    """Heard by a worker that lost the call before it claimed, answered or saved any of
    them: each is run, refused or carried out as the event itself would be."""
    before = Driver()
    before.attach()
    [run] = of_type(before.function_call("call_pending", "lookup", '{"order": "B7"}'), RunTool)
    before.function_call("call_settled", "weather")  # refused and saved before the loss
    ledger = {
        "call_new": LedgerEntry("requested", "lookup", arguments='{"order": "A12"}'),
        "call_unknown_tool": LedgerEntry("requested", "weather", arguments="{}"),
        "call_pending": LedgerEntry("requested", "lookup", arguments='{"order": "B7"}'),
        "call_settled": LedgerEntry("requested", "weather", arguments="{}"),
    }
    after, effects = _taken_over(before, ledger=ledger)
    runs = sorted(of_type(effects, RunTool), key=lambda r: r.tool_call_id)
    assert runs == [RunTool("call_new", "lookup", {"order": "A12"}, run.timeout_s), run]
    resent = after.attach(fresh=False)
    [(refused, message)] = _outputs(resent)
    assert refused == "call_unknown_tool"
    assert json.loads(message) == {"error": "unknown tool 'weather'"}
    answered = [*after.tool_result("call_new", "shipped"), *after.tool_result("call_pending", "x")]
    assert sorted(_outputs(answered)) == [("call_new", "shipped"), ("call_pending", "x")]


def test_a_function_call_requested_after_the_takeover_is_handled_once() -> None:
    """The worker that lost the call left it while the next one was already running."""
    d = Driver()
    d.attach()
    d.function_call("call_heard", "lookup")
    late = FunctionCall("call_late", "lookup", '{"order": "C3"}')
    [run] = of_type(d.core.on_requested_tool(late, d.now), RunTool)
    assert run == RunTool("call_late", "lookup", {"order": "C3"}, 5.0)
    assert d.core.on_requested_tool(late, d.now) == []
    assert d.core.on_requested_tool(FunctionCall("call_heard", "lookup", "{}"), d.now) == []
    assert _outputs(d.tool_result("call_late", "shipped")) == [("call_late", "shipped")]
    transfer = FunctionCall("call_move", "transfer_call", '{"target": "sales"}')
    assert of_type(d.core.on_requested_tool(transfer, d.now), ClaimControl)


def test_a_function_call_is_read_from_its_event_as_the_model_made_it() -> None:
    event = {
        "type": "response.function_call_arguments.done",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"order": "A12"}',
        "response_id": "resp_1",
    }
    call = FunctionCall.of(event)
    assert call == FunctionCall("call_1", "lookup", '{"order": "A12"}')
    assert call is not None
    assert FunctionCall.of(call.event()) == call
    assert FunctionCall.of({**event, "name": 7, "arguments": None}) == FunctionCall(
        "call_1", "", ""
    )
    assert FunctionCall.of({**event, "call_id": ""}) is None
    assert FunctionCall.of({**event, "type": "response.done"}) is None
