"""OPA answers the PDP cannot trust are errors, never verdicts."""

from __future__ import annotations

import pytest

from pdp.errors import OpaError
from pdp.opa import _parse


@pytest.mark.parametrize(
    "raw",
    [b"<html>proxy error</html>", b"[]", b'{"result": {"outcome": "allow"}}', b'{"provenance": {}, "metrics": 1}'],
)
def test_unexpected_bodies_are_opa_errors(raw: bytes) -> None:
    with pytest.raises(OpaError):
        _parse(raw, 1)


def test_missing_result_is_undefined_not_empty() -> None:
    answer = _parse(b'{"provenance": {"version": "1.22.2", "bundles": {"rego": {"revision": "r1"}}}, "metrics": {}}', 5)
    assert not answer.defined
    assert answer.bundle_revisions == {"rego": "r1"}
    assert answer.opa_version == "1.22.2"
