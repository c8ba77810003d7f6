"""The client's exceptions: every failure a caller should handle is a lensgrid.Error."""
from typing import Any, Optional


class Error(Exception):
    """A lensgrid failure. For a server's answer, .code is the grpc.StatusCode and .details the
    server's message; for a failure found in this process (bad arguments, an API version
    mismatch, a hook function that cannot be traced) .code is None."""

    def __init__(self, message: str, code: Optional[Any] = None, details: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.details = details if details is not None else message


class WorkerError(Error):
    """A worker's (or coordinator's) error status: .code (grpc.StatusCode) and .details."""

    def __init__(self, code: Any, details: str):
        super().__init__(f"{code.name}: {details}", code, details)


class ApiVersionError(Error):
    """The server speaks a Worker API version this client cannot use."""


class TraceError(Error):
    """A hook function did something a hook program cannot express (the message names it)."""


class InvalidInputError(Error, ValueError, TypeError):
    """Bad arguments found before anything was sent (also a ValueError and a TypeError, as the
    client raised before lensgrid.Error existed)."""
