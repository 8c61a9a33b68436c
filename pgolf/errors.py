"""One exception family for every expected failure.

Each subclass carries the exit code the CLI uses; the message is one line that
says what went wrong and where. Anything that is not a PgolfError reaching the
user is a bug.
"""


def one_line(exc: BaseException) -> str:
    """A PgolfError's message as is; any other exception as `Type: first line of its message`."""
    if isinstance(exc, PgolfError):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class PgolfError(Exception):
    """An expected failure: bad input, corrupt file, infeasible request."""

    exit_code = 1


class ConfigError(PgolfError):
    """A config key, value or type that does not fit the schema."""


class DataError(PgolfError):
    """A missing, corrupt or inconsistent data file (shards, tokenizer, corpus)."""


class ArtifactError(PgolfError):
    """An artifact or checkpoint that cannot be read or does not match its model."""


class CodecError(PgolfError):
    """An unknown codec, or one whose library is not installed."""


class MissingExtraError(PgolfError):
    """An optional extra (pgolf[plot], pgolf[submitit]) that the request needs is not installed."""


class TrainingError(PgolfError):
    """Training could not go on (NaN or inf loss, nothing to train on)."""


class UsageError(PgolfError):
    """The command line itself is wrong, or the verb is not built yet."""

    exit_code = 2


class BudgetError(PgolfError):
    """The byte budget cannot be met by any candidate."""

    exit_code = 3


class AuditFailed(PgolfError):
    """`pgolf audit` found a check that fails: the records folder breaks a challenge rule."""

    exit_code = 4


class Interrupted(PgolfError):
    """The user pressed Ctrl-C; what was trained has been saved."""

    exit_code = 130


class Terminated(Interrupted):
    """The process was sent SIGTERM (a scheduler or `kill`); what finished has been written."""

    exit_code = 143
