"""The PDP's errors.

Two families, and nothing else is raised on purpose:

* :class:`PdpError` subclasses are problems with a request or the service; each carries the
  gRPC status code the caller receives (mapped in one place, the servicer).
* :class:`NoVerdict` subclasses mean the policy gave no usable verdict. They never reach the
  caller as an error: the decision pipeline turns them into DENY + indeterminate with their
  ``error_code``. That is how the PDP fails closed.
"""

from __future__ import annotations

import grpc


class PdpError(Exception):
    """Base of every error the PDP reports to a caller as a gRPC status."""

    status = grpc.StatusCode.INTERNAL


class InvalidArgument(PdpError):
    """The request is malformed; the message names the field."""

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ConfigError(PdpError):
    """A setting is invalid; raised at start-up and names the variable."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class NoVerdict(Exception):
    """No policy verdict was reached; ``error_code`` says why (a ``pdp.*`` code)."""

    error_code = "pdp.no_verdict"


class OpaUnavailable(NoVerdict):
    """OPA could not be reached (connection refused, reset, closed)."""

    error_code = "pdp.opa_unavailable"


class OpaTimeout(NoVerdict):
    """OPA did not answer within the deadline."""

    error_code = "pdp.opa_timeout"


class OpaError(NoVerdict):
    """OPA answered with an error status or a body that is not OPA's response shape."""

    error_code = "pdp.opa_error"


class PolicyUndefined(NoVerdict):
    """The decision document is undefined: the bundle is missing or does not define it."""

    error_code = "pdp.policy_undefined"


class PolicyMalformed(NoVerdict):
    """The decision document does not follow the policy contract."""

    error_code = "pdp.policy_malformed"


class LedgerUnavailable(NoVerdict):
    """The decision could not be recorded durably (disk full, I/O error, log closed): no ALLOW."""

    error_code = "pdp.ledger_unavailable"


class LedgerCorrupt(PdpError):
    """The decision log on disk is damaged before its last checkpoint: tampering or disk failure."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(PdpError):
    """No such decision in this PDP's log."""

    status = grpc.StatusCode.NOT_FOUND
