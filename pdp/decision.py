"""A decision as the pipeline hands it to the faces (gRPC, telemetry): a leaf module, imported by all."""

from __future__ import annotations

import dataclasses
from typing import Any

from pdp.verdict import Verdict


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """One decision, everything the caller and the record need."""

    decision_id: str
    request_id: str
    verdict: Verdict
    agent_id: str
    tool: str
    decision_path: str
    opa_version: str = ""
    bundle_revisions: dict[str, str] = dataclasses.field(default_factory=dict)
    bundle_signing_keys: dict[str, str] = dataclasses.field(default_factory=dict)  # bundle -> verifying key id
    explain: int = 0
    explanation: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    explanation_omitted: str = ""  # asked for, not given: why (pdp.explain)
    total_ns: int = 0
    opa_ns: int = 0
    opa_eval_ns: int = 0
    record: str = ""
    log_index: int = 0
    approvals: dict[str, Any] = dataclasses.field(default_factory=dict)  # the record's pdp.approvals
    escalation_id: str = ""  # REQUIRE_APPROVAL: the escalation opened for it
    escalation_expires_at: int = 0
    # The trust model: the verified principal, what vouched for what, and the caller it was made for.
    principal_id: str = ""
    trust: dict[str, Any] = dataclasses.field(default_factory=dict)
    audience: str = ""
