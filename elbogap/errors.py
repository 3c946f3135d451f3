"""Errors that name a user's mistake and its fix; the command line prints them as one line."""


class UsageError(ValueError):
    """A problem with the input or the configuration, with a message that says how to fix it."""
