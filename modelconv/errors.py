"""Exception classes and the exit codes they map to.

The library raises these; only the CLI turns them into one line on stderr and
an exit code. Messages say what failed, the value that caused it, and what to
do next.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_USER = 2
EXIT_INTERNAL = 3


class ModelconvError(Exception):
    """Base of every error modelconv raises on purpose."""

    exit_code = EXIT_USER
    kind = "error"


class UsageError(ModelconvError, ValueError):
    """A bad option or a request that cannot be served as asked."""

    kind = "usage"


class InputError(ModelconvError, ValueError):
    """The input file is missing, unreadable, truncated or malformed."""

    kind = "bad-input"


class UnknownFormatError(InputError):
    """The file is not in a format modelconv can read (or is named but unsupported)."""

    kind = "unknown-format"


class UnsupportedError(InputError):
    """A recognised artifact or construct modelconv does not support yet."""

    kind = "unsupported"


class UnsupportedDtypeError(InputError):
    """A dtype outside modelconv's closed list."""

    kind = "unsupported-dtype"


class HostileInputError(InputError):
    """Content refused for safety: code to execute, links out, bombs, lies."""

    kind = "refused"


class LimitExceededError(HostileInputError):
    """A declared size, depth or count beyond a safety limit."""

    kind = "limit"


class LossyConversionError(ModelconvError):
    """The target cannot carry something, and the loss was not allowed."""

    kind = "lossy"


class DestinationExistsError(ModelconvError, FileExistsError):
    """The destination exists and --force was not given."""

    kind = "exists"


class InternalError(ModelconvError, RuntimeError):
    """modelconv's own fault."""

    exit_code = EXIT_INTERNAL
    kind = "internal"


class ReadBackMismatchError(InternalError):
    """The written file did not read back identical to what was written."""

    kind = "read-back-mismatch"
