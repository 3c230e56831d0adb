"""What the scripted model says when a response's instructions tell it what to say."""

from __future__ import annotations

import pytest

from emulator.model import speech_from_instructions


@pytest.mark.parametrize(
    ("instructions", "spoken"),
    [
        (
            "Say the following to the caller, word for word, and nothing else: Goodbye.",
            "Goodbye.",
        ),
        ('say this: He said "hold on", then left.', 'He said "hold on", then left.'),
        ('Say "Welcome to Acme."', "Welcome to Acme."),
        ('Say "Hello: world"', "Hello: world"),
        ("Greet the caller with “Hi there.”", "Hi there."),
        ("Tell them the store opens at nine.", "Tell them the store opens at nine."),
    ],
)
def test_the_model_says_what_it_is_told(instructions: str, spoken: str) -> None:
    assert speech_from_instructions(instructions) == spoken
