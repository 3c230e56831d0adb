"""The straightforward way to hold calls, as a baseline: one ``openai`` SDK socket per call.

    python -m bench.sdk_calls --base-url http://127.0.0.1:8100/v1 --calls FILE

Attaches to every call id listed in FILE with ``AsyncOpenAI().realtime.connect(
call_id=...)`` in one process and handles the same events a runner must act on
(answers tool calls with an output and ``response.create``), until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

import orjson
from openai import AsyncOpenAI


async def hold(client: AsyncOpenAI, call_id: str) -> None:
    with contextlib.suppress(Exception):
        async with client.realtime.connect(call_id=call_id) as conn:
            async for event in conn:
                if event.type == "response.function_call_arguments.done":
                    output = orjson.dumps({"status": "shipped"}).decode()
                    await conn.conversation.item.create(
                        item={
                            "type": "function_call_output",
                            "call_id": event.call_id,
                            "output": output,
                        }
                    )
                    await conn.response.create()


async def main(base_url: str, api_key: str, call_ids: list[str]) -> None:
    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(hold(client, call_id)) for call_id in call_ids]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--calls", type=Path, required=True)
    args = parser.parse_args()
    ids = args.calls.read_text().split()
    asyncio.run(main(args.base_url, args.api_key, ids))
