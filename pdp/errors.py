"""Every error the PDP raises on purpose, in one tree under :class:`PdpError`.

* :class:`NoVerdict` subclasses mean the policy gave no usable verdict. They never reach the
  caller as an error: the decision pipeline turns them into DENY + indeterminate with their
  ``error_code``. That is how the PDP fails closed.
* :class:`InvalidArgument`, :class:`NotFound`, :class:`ConfigError`, :class:`LedgerCorrupt` are
  problems with a request or the service. The gRPC face maps them to status codes
  (``pdp.grpc.status``); nothing here knows about gRPC.
* :class:`RecordError`, :class:`VerificationError`, :class:`CheckpointError`, :class:`ProofError`,
  :class:`AuditError` say that something signed or proven does not verify.

The ``pdp`` command catches :class:`PdpError` and prints one line: the message (what failed) and
the class's :attr:`PdpError.hint` (what to do).
"""

from __future__ import annotations


class PdpError(Exception):
    """Base of every exception the PDP raises on purpose."""

    hint = ""
    """What to do about it, said once per kind of error (the CLI prints it after the message)."""


class InvalidArgument(PdpError):
    """The request is malformed; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ConfigError(PdpError):
    """A setting is invalid, or the service cannot start with it; names the variable or file."""

    hint = "fix it and start again; docs/configuration.md lists every setting"


class SidecarError(PdpError):
    """The OPA sidecar the PDP starts did not come up."""

    hint = "is its address in use, or the bundle broken? OPA's own log lines say which"


class NotFound(PdpError):
    """No such decision in this PDP's log."""


class PermissionDenied(PdpError):
    """The authenticated caller's roles do not allow this call (see docs/authorization.md)."""

    hint = "give the caller's identity the role in PDP_ROLES_FILE"


class AlreadyReported(PdpError):
    """An outcome was already reported for this decision: a decision has one outcome."""


class NotAnAllow(PdpError):
    """An outcome report on a decision that was not an ALLOW: nothing may have run, and the
    decision's signed record already says what was held back, so there is nothing to report."""

    hint = "report outcomes only on ALLOW decisions (docs/authorization.md)"


class RateLimited(PdpError):
    """The caller is over its rate of decisions (PDP_DECIDE_RATE)."""


class LedgerCorrupt(PdpError):
    """The decision log on disk is damaged before its last checkpoint: tampering or disk failure."""

    hint = "restore the log directory from a copy; `pdp audit verify` names the first damaged entry"


class NoVerdict(PdpError):
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
    hint = "check the disk under PDP_LOG_DIR (space, permissions) and restart"


class RecordError(PdpError):
    """A record does not verify: malformed, unknown key, wrong type, or a bad signature."""


class VerificationError(PdpError):
    """A PEP must not act on the record; the message says why."""


class CheckpointError(PdpError):
    """A signed checkpoint (C2SP signed note) is malformed or does not verify."""


class ProofError(PdpError):
    """A Merkle inclusion or consistency proof does not verify, or cannot be made."""


class AuditError(PdpError):
    """The log does not verify; ``index`` is the first bad entry (None: not an entry)."""

    hint = "the log was altered or damaged at that place; keep a copy for investigation"

    def __init__(self, why: str, *, index: int | None = None, where: str = "") -> None:
        at = " ".join(x for x in (f"entry {index}" if index is not None else "", where) if x)
        super().__init__(f"{at}: {why}" if at else why)
        self.index = index
