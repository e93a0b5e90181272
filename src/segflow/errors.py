"""Errors a user can act on: the CLI prints their message (no traceback) and exits non-zero."""


class SegflowError(Exception):
    """Base class: str(error) is a complete sentence naming the file and the rule."""

    exit_code = 1


class StageFailed(SegflowError):
    """A stage judged its input unusable (e.g. a dataset-level contract error)."""
