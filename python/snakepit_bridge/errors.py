"""Exceptions raised by the worker itself (as opposed to by adapter tools).

Tool exceptions travel to the host in-band with their own Python type name; the two
validation errors below have fixed type names the host maps to typed errors.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class for errors raised by snakepit_bridge itself."""

    #: The ``type`` field used for this error in the in-band error payload.
    error_type = "BridgeError"


class UnknownToolError(BridgeError):
    """The requested tool does not exist on the adapter."""

    error_type = "UnknownToolError"


class InvalidArgumentError(BridgeError):
    """A parameter could not be decoded, or the arguments do not fit the tool."""

    error_type = "InvalidArgumentError"


class AdapterImportError(BridgeError):
    """The ``--adapter`` class could not be imported (worker exits with code 3)."""

    error_type = "AdapterImportError"

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class StartupError(BridgeError):
    """Any other failure before the server signalled readiness (exit code 1)."""

    error_type = "StartupError"


class ProtocolModulesMissing(StartupError):
    """The generated ``snakepit_bridge_pb2`` modules are not importable."""


class WorkerKindError(BridgeError, RuntimeError):
    """A tool asked for something its worker kind does not offer: host-owned session
    state and host tools need the gRPC worker kind; a stdio worker has no way back to
    the host."""

    error_type = "WorkerKindError"


class ResultTooLargeError(BridgeError):
    """A tool's encoded result does not fit in one frame (stdio:
    ``SNAKEPIT_MAX_MESSAGE_BYTES``); sent instead of a frame the host would reject."""

    error_type = "ResultTooLargeError"


class DeadlineExceededError(BridgeError):
    """The request's deadline had passed before its tool started (the host no longer
    waits for the answer, so the tool is not run)."""

    error_type = "DeadlineExceededError"


def error_type_name(exc: BaseException) -> str:
    """The ``type`` reported for *exc*: our fixed names, else the Python class name."""
    if isinstance(exc, BridgeError):
        return exc.error_type
    return exc.__class__.__name__
