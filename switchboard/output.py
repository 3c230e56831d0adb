"""How the operator verbs speak: rich tables for people, JSON for scripts, one-line errors.

Exit codes are the same for every verb: 0 done, 1 refused or not found (with one line
on stderr saying why), 2 usage error (typer's own, or ``usage_error``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, NoReturn

import orjson
import redis
import typer
from rich.console import Console
from rich.table import Table

from shared.store import StoreUnavailable
from switchboard.cluster import ClusterUnavailable

EXIT_REFUSED = 1
EXIT_USAGE = 2
PIPE_WIDTH = 240


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Print ``error: message`` (first line only) on stderr and exit with ``code``."""
    line = message.strip().splitlines()[0] if message.strip() else "failed"
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """A usage error the argument parser could not catch (exit 2)."""
    fail(message, EXIT_USAGE)


@contextmanager
def refusals() -> Iterator[None]:
    """Turn an unreachable cluster into exit 1 with a one-line reason."""
    try:
        yield
    except (ClusterUnavailable, StoreUnavailable) as err:
        fail(str(err))
    except (redis.ConnectionError, redis.TimeoutError) as err:
        # The driver names host and port at most, never the URL's password.
        fail(f"redis unavailable: {type(err).__name__}: {err}")


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(data: object) -> None:
    """``data`` as one JSON document on stdout (keys sorted, for stable diffs)."""
    sys.stdout.write(
        orjson.dumps(data, default=_default, option=orjson.OPT_SORT_KEYS).decode() + "\n"
    )
    sys.stdout.flush()


def console() -> Console:
    """A console on stdout; without a terminal, wide enough that no row is folded."""
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(highlight=False, width=width)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> Table:
    """A table with one line per row (ids must stay whole to be copied)."""
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in columns:
        out.add_column(name, no_wrap=True)
    for row in rows:
        out.add_row(*row)
    return out


def key_values(title: str | None, pairs: Mapping[str, Any]) -> Table:
    """A two-column ``field value`` table."""
    out = Table(title=title, title_justify="left", show_header=False, show_edge=False)
    out.add_column("field", style="bold")
    out.add_column("value", overflow="fold")
    for name, value in pairs.items():
        out.add_row(name, "-" if value is None or value == "" else str(value))
    return out


def age(at_s: float | None, now_s: float | None = None) -> str:
    """``12s``, ``3m05s``, ``2h10m`` since ``at_s``; ``-`` when unknown."""
    if at_s is None:
        return "-"
    return duration(max(0.0, (time.time() if now_s is None else now_s) - at_s))


def duration(seconds: float) -> str:
    """A short human duration."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def usd(amount: float | Decimal | None) -> str:
    """``$0.0123``: four decimals, enough for per-call costs."""
    if amount is None:
        return "-"
    return f"${float(amount):,.4f}"


def when(at_s: float | None) -> str:
    """A unix time as local ``HH:MM:SS``; ``-`` when unknown."""
    if at_s is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(at_s))
