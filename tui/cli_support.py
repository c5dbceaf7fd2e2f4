"""What every ``triptych`` command shares: its error type and how it reads the settings.

Its own module so that ``tui.cli`` can load the subcommand modules lazily
without their importing ``tui.cli`` back.
"""

from __future__ import annotations

import sys

from tui.safe_text import one_line
from tui.services.settings import SettingsService


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def load_settings() -> SettingsService:
    """The settings owner for one command; each problem in the file is one note on stderr.

    The command still runs (on the defaults where the file is unusable).
    """
    service = SettingsService()
    for problem in service.problems:
        print(f"triptych: note: {one_line(problem)}", file=sys.stderr)
    return service
