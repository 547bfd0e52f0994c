"""The one exception every command turns into a one-line message and a non-zero exit."""

from __future__ import annotations

EXIT_ERROR = 1
"""Bad input, a refusal, no permission, an unreachable API."""
EXIT_USAGE = 2
"""The command line itself is wrong (argparse's own code)."""
EXIT_TIMEOUT = 3
"""A change was made but its effect was not seen within ``--timeout``."""


class CliError(Exception):
    """One line for the operator: what is wrong and what to change."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Refused(CliError):
    """The target is not eligible; nothing was changed."""
