"""The `onenet` command (also `python -m onenet`).

Prefect reads its settings once, when it is first imported, and the operations
(onenet/operations.py) import the flows, which import Prefect. So the workspace is found in the
command line first, Prefect is configured for it (its home, a running `onenet server`), and only
then do the commands load: the uses (onenet/cli.py) always, the operations when the command is
one of them or the command line asks for help (a question does not wait for Prefect to import).
"""

from __future__ import annotations

import sys

from core import prefect_env
from core.workspace import Workspace

GLOBAL_FLAGS = ("--json",)  # accepted after the command too: `onenet words red --json`
GLOBAL_OPTIONS = ("--workspace",)  # ... and these with their value


def main() -> None:
    argv = global_options_first(sys.argv[1:])
    prefect_env.configure(Workspace.at(workspace_option(argv)))
    prefect_env.CLI_SAYS_ERRORS = True  # before the flows load: they set up Prefect's logging with it
    from onenet import cli  # the commands, once Prefect is configured

    if command_of(argv) not in cli.command_names():
        from onenet import operations  # noqa: F401  (registers its commands on cli.app)
    cli.run(argv)


def global_options_first(argv: list[str]) -> list[str]:
    """argv with the global options moved before the command (click only reads them there);
    anything after a `--` is left as it is."""
    head, rest = [], list(argv)
    end = rest.index("--") if "--" in rest else len(rest)
    i = 0
    while i < end:
        arg = rest[i]
        if arg in GLOBAL_FLAGS or arg.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in arg:
            head.append(rest.pop(i))
            end -= 1
        elif arg in GLOBAL_OPTIONS and i + 1 < end:
            head += [rest.pop(i), rest.pop(i)]
            end -= 2
        else:
            i += 1
    return head + rest


def command_of(argv: list[str]) -> str | None:
    """The command an argv whose global options come first names (None: none, e.g. --help)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in (*GLOBAL_OPTIONS, "-w"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def workspace_option(argv: list[str]) -> str | None:
    """The --workspace/-w value of an argv whose global options come first (None: not given)."""
    names = (*GLOBAL_OPTIONS, "-w")
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        if arg.split("=", 1)[0] in names and "=" in arg:
            return arg.split("=", 1)[1]
        if not arg.startswith("-"):
            return None  # the command: its own options follow
    return None
