"""How a command ends: its exit code, and the one-line message of a user error."""

EXIT_CODES = {"completed": 0, "diverged": 1, "interrupted": 130}
USER_ERROR_EXIT = 2


def fail(message: str) -> None:
    from diagnose.console import console

    console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)  # one line: greppable
