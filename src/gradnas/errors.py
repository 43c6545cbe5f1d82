"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class GradnasError(Exception):
    """A user-facing error: the message names the problem and the fix; no traceback is shown."""
