"""The one error type the agent reports to the user: its `str()` is a complete one-line message."""


class AgentError(Exception):
    """A refusal or an environment problem; the CLI prints it on one line and exits 2."""
