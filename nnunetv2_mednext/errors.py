"""User-facing errors: the CLI prints them as one line (no traceback)."""


class MedNeXtUserError(RuntimeError):
    """A problem the user can fix; the message names the problem and the fix."""
