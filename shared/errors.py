"""The one exception tree of Switchboard.

Whether an error is worth retrying is decided once, where it enters the system (the
REST boundary classifies HTTP answers; the store classifies Redis failures), so that
callers only ever ask ``isinstance(err, RetryableError)``::

    SwitchboardError
    ├── RetryableError              transient; the same request may succeed later
    │   └── RealtimeUnavailable     429, 5xx, 408, 409 (race) or no connection
    └── FatalError                  retrying the same request cannot help
        ├── RealtimeRejected        an answer retrying cannot change (most 4xx)
        │   └── CallGone            404: the call no longer exists (caller hung up)
        ├── DeadlineExceeded        retried until the overall deadline, then gave up
        ├── InvalidRequest          input that can never be carried out (bad target, code)
        │   ├── CallNotFound        no record for the call id
        │   └── CallEnded           the call is over and takes no more commands
        └── ConfigError             invalid configuration (file, environment)
            └── PolicyError         an invalid routing policy, with its locations

Messages carry what an operator needs (endpoint, call id, status, the API's own error
message) and never a credential: clients redact secrets before building an error.
"""

from __future__ import annotations

from dataclasses import dataclass


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class RetryableError(SwitchboardError):
    """A transient failure: the same operation may succeed if tried again later."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """The server's ``Retry-After`` hint in seconds, when it sent one."""


class FatalError(SwitchboardError):
    """A permanent failure: repeating the same operation cannot succeed."""


class RealtimeUnavailable(RetryableError):
    """The Realtime API answered 429/5xx/408/409, or could not be reached at all."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status_code: int | None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s)
        self.endpoint = endpoint
        self.status_code = status_code
        """``None`` when no HTTP answer arrived (connection error or timeout)."""


class RealtimeRejected(FatalError):
    """The Realtime API refused the request in a way retrying cannot change (most 4xx)."""

    def __init__(
        self, message: str, *, endpoint: str, status_code: int, api_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code
        self.api_code = api_code
        """The API's machine-readable ``error.code`` (``call_already_accepted``...), if any."""


class CallGone(RealtimeRejected):
    """404 from a call endpoint: the call no longer exists (the caller hung up).

    ``after_lost_answer``: an earlier attempt of the same request may have reached the
    API without its answer reaching us (a timeout, a dropped connection). The real API
    answers a repeated accept or reject of a call it has already acted on with 404, so
    such a 404 may mean the first attempt went through rather than that the caller left.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status_code: int,
        api_code: str | None = None,
        after_lost_answer: bool = False,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status_code=status_code, api_code=api_code)
        self.after_lost_answer = after_lost_answer


class DeadlineExceeded(FatalError):
    """An operation kept failing transiently until its overall deadline passed."""

    def __init__(self, message: str, *, last_error: SwitchboardError | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error


class InvalidRequest(FatalError):
    """A request that can never be carried out as given; nothing was changed."""


class CallNotFound(InvalidRequest):
    """No record for this call id (never seen, expired, or not a valid id)."""


class CallEnded(InvalidRequest):
    """The call is over (ended, rejected or failed): commands cannot reach it."""


class ConfigError(FatalError):
    """Configuration that cannot be used as given."""


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file: where it is and what is wrong."""

    source: str
    """The file name (or ``<demo>`` for the built-in policy)."""
    line: int | None
    """1-based line of the offending value, when known."""
    path: str
    """Dotted field path such as ``routes[2].action.code``; empty for the whole file."""
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ConfigError):
    """A routing policy that failed to parse or validate; ``issues`` locates each problem."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues
