"""How a container fails: ``ContainerError`` and docker's exit codes for pyreg's own failures."""

from __future__ import annotations

EXIT_PYREG = 125  # pyreg could not create or start the container
EXIT_CANNOT_EXEC = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND = 127  # the command does not exist


class ContainerError(Exception):
    """A failure to create or start a container; ``code`` is the exit status pyreg returns."""

    def __init__(self, message: str, code: int = EXIT_PYREG) -> None:
        super().__init__(message)
        self.code = code
