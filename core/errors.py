"""The one base class for errors a user can fix: the CLI prints them as one line and exits non-zero."""


class EdgejouleError(Exception):
    """An error caused by input or configuration, with a message that says how to fix it."""
