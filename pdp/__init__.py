"""Policy decision point for autonomous AI agents: gRPC in front of Open Policy Agent.

Public API for PEP authors (stable; everything else in ``pdp`` is internal and may change):

* :mod:`pdp.client`: ``Client``, ``verify``, ``digest_of``, ``MemoryReplayCache``, ``ReplayCache``,
  ``VerifiedDecision``, ``VerificationError`` — ask for a decision and verify its record before acting.
* :mod:`pdp.records`: ``verify``, ``TYP_DECISION``, ``TYP_OUTCOME`` — record verification (JWS).
* :mod:`pdp.schema`: the typed record classes (``DecisionRecord``, ``OutcomeRecord``, ...).
* :mod:`pdp.digest`: ``action_digest`` — the digest that binds a record or approval to one action.
* :mod:`pdp.errors`: ``PdpError``, the base of every error the PDP raises.

See docs/architecture.md for the module map and what may import what.
"""

__version__ = "0.1.0"
