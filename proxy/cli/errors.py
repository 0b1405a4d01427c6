"""The one exception type a CLI command raises to stop with a message."""


class CliError(Exception):
    """A failure to report as one line on stderr; ``exit_code`` is the process status."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
