"""How a command ends: its exit code, and the one-line message of a user error."""

# A script can tell each outcome apart (README: "Exit codes").
EXIT_CODES = {"completed": 0, "diverged": 1, "interrupted": 130, "failed": 1}  # failed: `diagnose check` found a fault
USER_ERROR_EXIT = 2  # the command line, a value or the data: the message says what to change
INTERNAL_ERROR_EXIT = 3  # a bug in diagnose: the traceback is in the run's train.log


def fail(message: str) -> None:
    from diagnose.console import console

    console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)  # one line: greppable
