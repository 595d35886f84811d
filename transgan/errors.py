"""The one exception type the CLI turns into a single clear error line (no traceback)."""


class TransganError(Exception):
    """A mistake the user can fix: the message names the file, option or value and what to do."""
