"""The one base class of the project's own errors.

Every error that describes a problem with what the user gave, and not a bug (a config key, a data
file, a checkpoint, a work dir held by another run, a setting of the environment), derives from
`SpinFastError`, so one handler (`spin_fast.cli.run_command`) reports all of them as one line on
stderr, without a traceback. Their messages name the file, the key and the sample.
"""
from __future__ import annotations


class SpinFastError(Exception):
    """A problem with the user's input, files or environment; the message says which and what to do."""


class SettingError(SpinFastError):
    """An environment variable of spin_fast (`spin_fast.config`) has a value that cannot work here."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a long command, with `where` it stopped (`step 17 of 40`, `batch 3 of 8`) and what
    was kept, for the command's one-line report."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where
