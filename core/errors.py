class OnenetError(Exception):
    """An error a user can act on; the CLI prints its message as one line and exits non-zero."""


class TransientError(OnenetError):
    """A failure that may go away on its own (a dropped connection, a server error): worth a retry."""


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: spend a task's retries on transient failures only, so a wrong
    path or a bad checksum fails at once instead of after every back-off delay."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(error, TransientError)


def at_least(option: str, value: int, minimum: int = 1) -> int:
    """`value` of the command-line `option`, refused in one line when below `minimum`."""
    if value is None or value < minimum:
        raise OnenetError(f"{option} must be at least {minimum}" + (f", not {value}" if value is not None else ""))
    return value
