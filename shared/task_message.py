"""Celery task messages built without Celery, for producers that must not block.

``Celery.send_task`` is synchronous, so the ingress cannot call it on its event loop.
Instead it builds the very message kombu's Redis transport would store (an envelope
around a Celery protocol-2 task) and LPUSHes it onto the queue's list itself, in the
same round trip as the call record. A worker BRPOPs that list, as with any message a
Celery client sent; ``tests/component/test_route_message.py`` checks the shape against
``send_task`` and runs it through a real worker.

Only plain JSON arguments are supported; there are no ETA, expiry or callbacks.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

# Embedded options of a plain task with no canvas around it.
_EMBED: Mapping[str, None] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(
    task: str,
    args: Sequence[Any],
    queue: str,
    *,
    task_id: str,
    delivery_tag: str,
    origin: str,
    reply_to: str,
    kwargs: Mapping[str, Any] | None = None,
) -> bytes:
    """One kombu Redis-transport message that runs ``task(*args, **kwargs)``."""
    kwargs = dict(kwargs or {})
    body = orjson.dumps([list(args), kwargs, _EMBED])
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(list(args)),
            "kwargsrepr": repr(kwargs),
            "origin": origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
        },
    }
    return orjson.dumps(envelope)


def counting_ids() -> Callable[[], str]:
    """UUID-shaped ids from a random 128-bit start, counting up: unique per producer.

    A fresh ``uuid4`` costs a system call per id; two per message showed on the ingress
    hot path. Collisions between producers would need two random starts within a few
    billion of each other.
    """
    counter = itertools.count(int.from_bytes(os.urandom(16), "big"))

    def new_id() -> str:
        digits = f"{next(counter) & _MASK_128:032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    return new_id


_MASK_128 = (1 << 128) - 1


def _origin() -> str:
    # What Celery puts there: "<pid>@<hostname>", handy in `celery inspect` output.
    return f"{os.getpid()}@{socket.gethostname()}"


@dataclass
class TaskMessages:
    """Builds messages for one producer process: fresh ids, a fixed origin."""

    new_id: Callable[[], str] = field(default_factory=counting_ids)
    origin: str = field(default_factory=_origin)
    reply_to: str = field(default_factory=lambda: str(uuid.uuid4()))

    def build(
        self, task: str, args: Sequence[Any], queue: str, *, task_id: str | None = None
    ) -> bytes:
        """A message for ``task(*args)`` on ``queue``; a new task id unless one is given."""
        return task_message(
            task,
            args,
            queue,
            task_id=task_id or self.new_id(),
            delivery_tag=self.new_id(),
            origin=self.origin,
            reply_to=self.reply_to,
        )
