"""One error hierarchy: the CLI turns each class into a one-line message and an exit code."""

from __future__ import annotations


class StreamcalcError(Exception):
    """Root of every error streamcalc raises on purpose."""

    exit_code = 1


class UsageError(StreamcalcError):
    """Bad command-line usage or invalid user input (exit 2)."""

    exit_code = 2


class GraphError(UsageError):
    """An invalid graph file or definition; the message names the file and the node."""


class EntryError(StreamcalcError):
    """An input entry that cannot be applied; it goes whole to the dead-letter stream."""


class FunctionError(StreamcalcError):
    """A node function raised or returned a value that is not a finite number or vector."""


class RedisUnavailable(StreamcalcError):
    """Redis could not be reached; the message names the (masked) URL."""


class RedisStateError(StreamcalcError):
    """Redis answered, but its state is not what streamcalc expects (no graph, lost data)."""


class GraphUnrunnable(StreamcalcError):
    """The stored graph cannot run here (an untrusted or missing plugin, a broken
    definition): the partition pauses until a runnable graph is loaded."""


class LeaseLost(StreamcalcError):
    """This worker no longer holds a partition's lease: it must stop working on it."""

    def __init__(self, partition: str, holder: str) -> None:
        self.partition = partition
        self.holder = holder
        super().__init__(f"partition {partition}: lease now held by {holder or 'nobody'}")


class BackpressureError(StreamcalcError):
    """A producer was refused because the group's lag exceeds the caller's limit."""
