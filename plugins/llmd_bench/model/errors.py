"""The project's own errors: every bad input ends in one of these, with a message a user can act on."""


class LlmdBenchError(Exception):
    """Base class; the CLI prints the message and exits non-zero without a traceback."""


class CampaignError(LlmdBenchError):
    """A campaign file is missing, malformed or violates the schema."""


class ParamsError(LlmdBenchError):
    """Trigger params (dag_run.conf) are invalid."""


class ReportError(LlmdBenchError):
    """A GuideLLM report is truncated, foreign, or from an unsupported version."""


class RuntimeStepError(LlmdBenchError):
    """A step could not bring the serving stack into the state it needs."""


class NotSelected(LlmdBenchError):
    """The cell is not selected by this run's params; the step exits with SKIP_EXIT_CODE."""


SKIP_EXIT_CODE = 99


class RunFolderTaken(LlmdBenchError):
    """Another campaign's run with the same run id already uses the results folder."""
