"""Scripted callers: what each caller says and does, and how the scripted model answers.

Built-in scenarios live as YAML files in the ``scenarios/`` folder beside this module;
``EmulatorConfig.scenario_dirs`` adds more (a file there replaces a built-in one of the
same name). One file holds one scenario::

    name: order-status            # defaults to the file name without .yaml
    description: Caller asks where an order is.
    ring_patience_s: null         # how long the caller lets it ring; null = config.ring_timeout_s
    greeting_wait_s: 1.5          # how long the caller waits for the agent to speak first
    reply_patience_s: 20          # how long the caller waits for a reply before hanging up
    max_duration_s: 600           # the caller hangs up after this long, whatever happens
    steps:
      - say: Hi, where is my order 12345?
        seconds: 3.2              # speech length; default from the words (usage.speech_s)
        pause_s: 0.5              # think time before the step (any step)
        reply: Let me check.      # what the model says to this turn (default: a generic line)
        tool:                     # the model calls this tool if the session declares it
          name: lookup_order
          arguments: {order_id: "12345"}   # "{call_id}" in a value: the function call's id
          then_say: "Here is what I found: {output}"   # once the output arrives
      - dtmf: "0"                 # key presses, each one a DTMF event
      - silence_s: 30             # the caller stays silent (the session's idle timeouts,
                                  # turn_detection.idle_timeout_ms, fire meanwhile)

Each step has exactly one of ``say``, ``dtmf``, ``silence_s``. After ``say`` and ``dtmf``
the caller waits for the agent to finish a spoken reply (``expect_reply: false`` skips
that); none within ``reply_patience_s`` and the caller hangs up. After the last step the
caller hangs up. Every duration is in scenario seconds, multiplied by
``EmulatorConfig.time_scale`` when played. A bad file raises ``ScenarioError`` naming the
file and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).with_name("scenarios")
DEFAULT_SCENARIO = "quick-question"


class ScenarioError(ValueError):
    """A scenario file or folder that cannot be used; the message names file and field."""


class ToolUse(BaseModel):
    """A tool call the scripted model makes in answer to a caller's turn."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    then_say: str = "Thanks for waiting. Here is what I found: {output}"


class Step(BaseModel):
    """One thing the caller does, and for speech, how the model reacts to it."""

    model_config = ConfigDict(extra="forbid")

    pause_s: float = Field(default=0.0, ge=0)
    say: str | None = Field(default=None, min_length=1)
    seconds: float | None = Field(default=None, gt=0)
    dtmf: str | None = Field(default=None, pattern=r"^[0-9*#A-D]+$")
    silence_s: float | None = Field(default=None, gt=0)
    reply: str | None = Field(default=None, min_length=1)
    tool: ToolUse | None = None
    expect_reply: bool = True

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        actions = [self.say is not None, self.dtmf is not None, self.silence_s is not None]
        if sum(actions) != 1:
            raise ValueError("a step needs exactly one of 'say', 'dtmf', 'silence_s'")
        if self.say is None and (self.reply, self.tool, self.seconds) != (None, None, None):
            raise ValueError("'reply', 'tool' and 'seconds' belong to a 'say' step")
        return self


class Scenario(BaseModel):
    """One scripted caller."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    ring_patience_s: float | None = Field(default=None, gt=0)
    greeting_wait_s: float = Field(default=1.5, ge=0)
    reply_patience_s: float = Field(default=20.0, gt=0)
    max_duration_s: float = Field(default=600.0, gt=0)
    steps: list[Step] = Field(default_factory=list)


def load_scenario_file(path: Path) -> Scenario:
    """Parse and validate one YAML scenario file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario file {path}: cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario file {path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario file {path}: expected a mapping of scenario fields")
    raw.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ScenarioError(f"scenario file {path}: field {where}: {first['msg']}") from exc


def _load_dir(folder: Path) -> dict[str, Scenario]:
    if not folder.is_dir():
        raise ScenarioError(f"scenario folder {folder} does not exist")
    found: dict[str, Scenario] = {}
    origin: dict[str, Path] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        scenario = load_scenario_file(path)
        if scenario.name in found:
            raise ScenarioError(
                f"scenario file {path}: field name: {scenario.name!r} is also defined "
                f"in {origin[scenario.name]}"
            )
        found[scenario.name] = scenario
        origin[scenario.name] = path
    return found


@cache
def builtin_scenarios() -> dict[str, Scenario]:
    """The scenarios shipped with the emulator, by name."""
    return _load_dir(BUILTIN_DIR)


def load_scenarios(extra_dirs: Sequence[Path]) -> dict[str, Scenario]:
    """The built-in scenarios plus those in ``extra_dirs`` (later folders win)."""
    scenarios = dict(builtin_scenarios())
    for folder in extra_dirs:
        scenarios.update(_load_dir(Path(folder)))
    return scenarios
