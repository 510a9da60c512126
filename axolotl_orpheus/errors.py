"""The one kind of error a user can fix from its message alone."""


class UserError(ValueError):
    """Bad input named in one line with its fix: the CLI prints the message and exits with code 2, the server
    answers it with a 4xx; never a traceback."""
