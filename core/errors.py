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
