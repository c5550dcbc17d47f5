"""The command line's own failure."""


class CliError(Exception):
    """A failure to report as one ``error: ...`` line on stderr (exit code 1)."""
