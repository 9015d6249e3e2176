"""The one exception type for mistakes a user can fix."""


class UserError(ValueError):
    """A mistake the user can fix (bad option, bad number, missing data).

    The message is one paragraph that names the problem and says what to do; the CLI prints it
    without a traceback and exits non-zero.
    """
