"""Errors raised by storage drivers; the registry maps them to HTTP answers."""


class StorageError(Exception):
    """Base class for driver failures."""


class PathNotFoundError(StorageError):
    """The path does not exist in the driver."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPathError(StorageError):
    """The path is not acceptable to the driver (relative, '..', bad characters)."""

    def __init__(self, path: str, reason: str = "invalid path") -> None:
        super().__init__(f"{reason}: {path!r}")
        self.path = path


class InvalidOffsetError(StorageError):
    """A read or append asked for an offset the stored data does not have."""


class LockLostError(StorageError):
    """A lock this process held was taken over (its lease ran out) or removed: stop writing."""

    def __init__(self, path: str) -> None:
        super().__init__(f"lock lost: {path}")
        self.path = path
