"""Human approval of escalated actions (issue 14). :mod:`pdp.approvals.tokens`: the signed approvals."""
