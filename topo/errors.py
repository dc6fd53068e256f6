"""The topology error tree: one root, one class per way a topology call can fail.

Callers branch on the class, never on message text; the HTTP API maps each class to a status code
in one place.
"""

from __future__ import annotations


class TopoError(Exception):
    """Root of every error raised by the topology store."""


class InvalidArgumentError(TopoError):
    """Input that can never be valid: a malformed alias, an empty keyspace name, a bad type."""


class NoNodeError(TopoError):
    """The record does not exist (unknown keyspace, shard, tablet, workflow...)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist")
        self.what = what


class NodeExistsError(TopoError):
    """A create found the record already there."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} already exists")
        self.what = what


class BadVersionError(TopoError):
    """A compare-and-swap lost to a concurrent writer: read again and retry."""

    def __init__(self, what: str, expected_revision: int) -> None:
        super().__init__(f"{what} changed since revision {expected_revision}")
        self.what = what
        self.expected_revision = expected_revision


class LockError(TopoError):
    """Root of the shard-lock failures."""


class LockTimeoutError(LockError):
    """The lock stayed held by someone else for the whole wait; names that holder."""

    def __init__(self, what: str, holder: object, waited_s: float) -> None:
        super().__init__(f"timed out after {waited_s:.1f}s waiting for {what}; held by {holder}")
        self.what = what
        self.holder = holder
        self.waited_s = waited_s


class LockLostError(LockError):
    """Our lock is gone (lease expired or revoked, key deleted or re-taken): stop side effects."""


class NotLockedError(LockError):
    """An unlock or force-unlock named a lock that is not held."""


class TopoUnavailableError(TopoError):
    """etcd did not answer in time or refused the connection."""
