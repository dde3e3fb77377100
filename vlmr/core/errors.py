"""The one error type the CLI shows to users: its message names what was wrong and how to fix it."""


class VlmrError(Exception):
    """A user-facing error: the message names the file, key or value, and what would fix it."""
