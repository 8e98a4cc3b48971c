class OnenetError(Exception):
    """An error a user can act on; the CLI prints its message as one line and exits non-zero."""
