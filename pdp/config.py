"""Settings: every ``PDP_*`` environment variable, read and validated once at start-up.

The defaults are the field defaults of :class:`Settings` (stated nowhere else in code); what each
variable means is the one table in docs/configuration.md, which a test keeps equal to this class.
``OTEL_*`` variables are left to the OpenTelemetry SDK.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pdp.client import is_loopback
from pdp.errors import ConfigError
from pdp.trust import TrustConfig

_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Validated PDP configuration."""

    listen: str = "127.0.0.1:50051"
    opa_url: str = "http://127.0.0.1:8181"
    decision_path: str = "pdp/decision"
    batch_path: str = "pdp/decisions"
    max_batch: int = 64
    opa_coalesce: bool = True
    opa_timeout_s: float = 0.5
    opa_explain_timeout_s: float = 5.0
    explain_concurrency: int = 1
    max_explanation_bytes: int = 8 << 20
    health_interval_s: float = 1.0
    max_request_bytes: int = 1 << 20
    max_depth: int = 16
    workers: int = 16
    grace_s: float = 10.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    log_level: str = "INFO"
    opa_bin: str = "opa"
    key_dir: Path | None = None
    log_dir: Path | None = None
    log_origin: str = "pdp.local/decisions"
    record_ttl_s: float = 300.0
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 1.0
    segment_max_bytes: int = 64 << 20
    mask_pointers: tuple[str, ...] = ()
    erase_pointers: tuple[str, ...] = ()
    # HTTP face (AuthZEN)
    http_listen: str = ""
    http_base_url: str = ""
    http_callers: tuple[str, ...] = ()
    authzen_mapping: Path | None = None
    # Policy lifecycle (docs/policy-lifecycle.md): policy-driven masking, shadow candidate
    mask_path: str = "pdp/mask/answer"
    mask_batch_path: str = "pdp/mask/answers"
    shadow_opa_url: str | None = None
    shadow_sample: float = 1.0
    # Shared state (escalations, consumed approvals, budgets, suspensions): PostgreSQL, else SQLite
    state_url: str = ""
    state_dir: Path | None = None
    # Approvals (issue 14): escalation and approval-token lifetimes; the loopback-only dev login
    escalation_ttl_s: int = 3600
    escalation_sweep_s: float = 5.0
    approval_ttl_s: int = 900
    approvals_dev_login: bool = False
    # Approver console (pdp.http.console)
    console_listen: str = ""
    console_dev_login: bool = False
    # Hardening (docs/authorization.md, docs/threat-model.md)
    roles_file: Path | None = None
    allow_insecure_non_loopback: bool = False
    max_list_entries: int = 1000
    max_string_chars: int = 16384
    max_struct_bytes: int = 256 * 1024
    max_outcome_bytes: int = 64 * 1024
    decide_rate: int = 2000
    decide_burst: int = 4000
    health_listen: str = ""
    allow_opa_api_data: bool = False

    @property
    def state_location(self) -> str | Path:
        """Where the state store lives: ``PDP_STATE_URL``, else ``PDP_STATE_DIR``, else ``state``
        beside the log directory (the embedded default)."""
        if self.state_url:
            return self.state_url
        if self.state_dir is not None:
            return self.state_dir
        if self.log_dir is None:
            raise ConfigError("PDP_STATE_URL or PDP_STATE_DIR is required when PDP_LOG_DIR is not set")
        return self.log_dir.parent / "state"

    trust: TrustConfig = dataclasses.field(default_factory=TrustConfig)

    @property
    def console_dev_login_honoured(self) -> bool:
        """``PDP_CONSOLE_DEV_LOGIN`` counts only on a loopback console address without TLS."""
        return self.console_dev_login and self.tls_cert_file is None and is_loopback(self.console_listen)

    def check_exposure(self) -> str:
        """What ``pdp serve`` must say loudly before it listens without TLS beyond loopback ("" nothing).

        Raises:
            ConfigError: it would, and ``PDP_ALLOW_INSECURE_NON_LOOPBACK`` is not 1.
        """
        if not self.listen_is_public or self.tls_cert_file is not None:
            return ""
        if not self.allow_insecure_non_loopback:
            raise ConfigError(
                f"PDP_LISTEN/PDP_HTTP_LISTEN: {self.listen} {self.http_listen} reach beyond loopback and TLS is off: "
                "anyone on the network could decide, read decisions and report outcomes. Set PDP_TLS_CERT_FILE and "
                "PDP_TLS_KEY_FILE (and PDP_TLS_CLIENT_CA_FILE), or PDP_ALLOW_INSECURE_NON_LOOPBACK=1 if something "
                "else protects the network"
            )
        return (
            f"INSECURE: listening beyond loopback ({self.listen} {self.http_listen}) without TLS because "
            "PDP_ALLOW_INSECURE_NON_LOOPBACK=1: every caller on the network is anonymous"
        )

    @property
    def listen_is_public(self) -> bool:
        """Whether ``PDP_LISTEN`` or ``PDP_HTTP_LISTEN`` binds beyond loopback."""
        return any(a and not is_loopback(a) for a in (self.listen, self.http_listen))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:  # noqa: PLR0912
        """Reads the ``PDP_*`` variables.

        Raises:
            ConfigError: a variable is set to an invalid value; the message names it.
        """
        env = os.environ if env is None else env
        kw: dict[str, object] = {}
        if (v := env.get("PDP_LISTEN")) is not None:
            kw["listen"] = _listen("PDP_LISTEN", v)
        if (v := env.get("PDP_OPA_URL")) is not None:
            kw["opa_url"] = _opa_url("PDP_OPA_URL", v)
        for name, field in (("PDP_DECISION_PATH", "decision_path"), ("PDP_BATCH_PATH", "batch_path")):
            if (v := env.get(name)) is not None:
                if not _PATH.match(v):
                    raise ConfigError(f"{name}: {v!r} is not a slash-separated rule path like pdp/decision")
                kw[field] = v
        for name, field, lo, hi in (
            ("PDP_OPA_TIMEOUT_MS", "opa_timeout_s", 1, 60_000),
            ("PDP_OPA_EXPLAIN_TIMEOUT_MS", "opa_explain_timeout_s", 1, 60_000),
            ("PDP_HEALTH_INTERVAL_MS", "health_interval_s", 50, 600_000),
            ("PDP_CHECKPOINT_INTERVAL_MS", "checkpoint_interval_s", 10, 3_600_000),
        ):
            if (v := env.get(name)) is not None:
                kw[field] = _int(name, v, lo, hi) / 1000
        for name, field, lo, hi in (
            ("PDP_MAX_REQUEST_BYTES", "max_request_bytes", 1024, 64 * 1024 * 1024),
            ("PDP_MAX_DEPTH", "max_depth", 2, 64),
            ("PDP_WORKERS", "workers", 1, 1024),
            ("PDP_EXPLAIN_CONCURRENCY", "explain_concurrency", 1, 64),
            ("PDP_MAX_EXPLANATION_BYTES", "max_explanation_bytes", 64 * 1024, 1 << 30),
            ("PDP_MAX_BATCH", "max_batch", 1, 1000),
            ("PDP_CHECKPOINT_EVERY", "checkpoint_every", 1, 10_000_000),
            ("PDP_SEGMENT_MAX_BYTES", "segment_max_bytes", 4096, 1 << 40),
        ):
            if (v := env.get(name)) is not None:
                kw[field] = _int(name, v, lo, hi)
        if (v := env.get("PDP_GRACE_SECONDS")) is not None:
            kw["grace_s"] = float(_int("PDP_GRACE_SECONDS", v, 0, 3600))
        for name, field in (
            ("PDP_TLS_CERT_FILE", "tls_cert_file"),
            ("PDP_TLS_KEY_FILE", "tls_key_file"),
            ("PDP_TLS_CLIENT_CA_FILE", "tls_client_ca_file"),
        ):
            if v := env.get(name):
                path = Path(v)
                if not path.is_file():
                    raise ConfigError(f"{name}: {v!r} is not a readable file")
                kw[field] = path
        if (v := env.get("PDP_LOG_LEVEL")) is not None:
            if v.upper() not in logging.getLevelNamesMapping():
                raise ConfigError(f"PDP_LOG_LEVEL: {v!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
            kw["log_level"] = v.upper()
        if v := env.get("PDP_OPA_BIN"):
            kw["opa_bin"] = v
        if (v := env.get("PDP_RECORD_TTL_SECONDS")) is not None:
            kw["record_ttl_s"] = float(_int("PDP_RECORD_TTL_SECONDS", v, 1, 30 * 86400))
        for name, field in (("PDP_KEY_DIR", "key_dir"), ("PDP_LOG_DIR", "log_dir"), ("PDP_STATE_DIR", "state_dir")):
            if v := env.get(name):
                kw[field] = Path(v)
        if v := env.get("PDP_LOG_ORIGIN"):
            if not re.match(r"^[^\s+]{1,128}$", v):
                raise ConfigError(f"PDP_LOG_ORIGIN: {v!r} must be 1-128 characters without spaces or '+'")
            kw["log_origin"] = v
        for name, field in (("PDP_MASK_POINTERS", "mask_pointers"), ("PDP_ERASE_POINTERS", "erase_pointers")):
            if v := env.get(name):
                pointers = tuple(p.strip() for p in v.split(",") if p.strip())
                if bad := [p for p in pointers if not p.startswith("/")]:
                    raise ConfigError(f"{name}: {bad[0]!r} is not a JSON pointer (like /action/arguments/card)")
                kw[field] = pointers
        if v := env.get("PDP_STATE_URL"):
            if not re.match(r"^postgres(ql)?://\S+$", v):
                raise ConfigError(
                    "PDP_STATE_URL: must be a postgresql:// URL (PDP_STATE_DIR is the embedded SQLite store)"
                )
            kw["state_url"] = v
        for group in (_http, _approvals, _console, _lifecycle, _coalescing, _hardening):  # each feature's settings
            kw.update(group(env))
        if v := env.get("PDP_TRUST_FILE"):
            kw["trust"] = TrustConfig.load(Path(v))  # validated now: a typo must not silently trust nothing
        settings = cls(**kw)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Checks the rules that span several settings.

        Raises:
            ConfigError: the settings contradict each other.
        """
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("PDP_TLS_CERT_FILE and PDP_TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("PDP_TLS_CLIENT_CA_FILE needs PDP_TLS_CERT_FILE and PDP_TLS_KEY_FILE (mTLS needs TLS)")
        if self.approvals_dev_login and (self.tls_client_ca_file is not None or not is_loopback(self.listen)):
            raise ConfigError(
                "PDP_APPROVALS_DEV_LOGIN: only for a loopback PDP_LISTEN without mTLS (development); "
                "approvers authenticate with client certificates otherwise"
            )
        if self.http_callers and self.tls_client_ca_file is None:
            raise ConfigError("PDP_HTTP_CALLERS needs PDP_TLS_CLIENT_CA_FILE (callers are named by their certificates)")
        if self.console_listen and self.tls_client_ca_file is None and not self.console_dev_login_honoured:
            raise ConfigError(
                "PDP_CONSOLE_LISTEN needs PDP_TLS_CLIENT_CA_FILE (approvers are named by their certificates), "
                "or PDP_CONSOLE_DEV_LOGIN=1 with a loopback address and no TLS (local development only)"
            )


def _lifecycle(env: Mapping[str, str]) -> dict[str, object]:
    """``PDP_MASK_PATH`` (empty: policy masking off), ``PDP_MASK_BATCH_PATH``, ``PDP_SHADOW_*``."""
    kw: dict[str, object] = {}
    for name, field in (("PDP_MASK_PATH", "mask_path"), ("PDP_MASK_BATCH_PATH", "mask_batch_path")):
        if (v := env.get(name)) is not None:
            if v and not _PATH.match(v):
                raise ConfigError(f"{name}: {v!r} is not a slash-separated rule path like pdp/mask/answer")
            kw[field] = v
    if v := env.get("PDP_SHADOW_OPA_URL"):
        kw["shadow_opa_url"] = _opa_url("PDP_SHADOW_OPA_URL", v)
    if (v := env.get("PDP_SHADOW_SAMPLE")) is not None:
        try:
            kw["shadow_sample"] = x = float(v)
        except ValueError:
            x = -1.0
        if not 0.0 <= x <= 1.0:
            raise ConfigError(f"PDP_SHADOW_SAMPLE: {v!r} is not a number between 0 and 1")
    return kw


def _int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a whole number") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{name}: {n} is outside {lo}..{hi}")
    return n


def _coalescing(env: Mapping[str, str]) -> dict[str, object]:
    """Whether concurrent Decide calls share one batched OPA query (PDP_OPA_COALESCE)."""
    v = env.get("PDP_OPA_COALESCE")
    return {} if v is None else {"opa_coalesce": _bool("PDP_OPA_COALESCE", v)}


def _bool(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean (1/true/yes/on or 0/false/no/off)")


def _listen(name: str, value: str) -> str:
    m = _LISTEN.match(value)
    if not m or int(m["port"]) > 65535:
        raise ConfigError(f"{name}: {value!r} is not host:port (e.g. 127.0.0.1:50051 or [::1]:50051)")
    return value


def _opa_url(name: str, value: str) -> str:
    if value.startswith("unix://"):
        if not value.removeprefix("unix://").startswith("/"):
            raise ConfigError(f"{name}: {value!r} must be unix:///absolute/path")
        return value
    if value.startswith("http://"):
        _listen(name, value.removeprefix("http://").rstrip("/"))
        return value.rstrip("/")
    raise ConfigError(f"{name}: {value!r} must be http://host:port or unix:///path (a sidecar on loopback)")


def _approvals(env: Mapping[str, str]) -> dict[str, object]:
    """The approvals settings (docs/approvals.md)."""
    kw: dict[str, object] = {}
    for name, field, lo, hi in (
        ("PDP_ESCALATION_TTL_SECONDS", "escalation_ttl_s", 10, 30 * 86400),
        ("PDP_APPROVAL_TTL_SECONDS", "approval_ttl_s", 10, 86400),
    ):
        if (v := env.get(name)) is not None:
            kw[field] = _int(name, v, lo, hi)
    if (v := env.get("PDP_ESCALATION_SWEEP_MS")) is not None:
        kw["escalation_sweep_s"] = _int("PDP_ESCALATION_SWEEP_MS", v, 100, 3_600_000) / 1000
    if v := env.get("PDP_APPROVALS_DEV_LOGIN"):
        if v not in ("0", "1"):
            raise ConfigError(f"PDP_APPROVALS_DEV_LOGIN: {v!r} must be 1 (on) or 0 (off)")
        kw["approvals_dev_login"] = v == "1"
    return kw


def _http(env: Mapping[str, str]) -> dict[str, object]:
    """The HTTP face's settings (AuthZEN)."""
    kw: dict[str, object] = {}
    if v := env.get("PDP_HTTP_LISTEN"):
        kw["http_listen"] = _listen("PDP_HTTP_LISTEN", v)
    if v := env.get("PDP_HTTP_BASE_URL"):
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", v):
            raise ConfigError(f"PDP_HTTP_BASE_URL: {v!r} must be an http(s) URL without query or fragment")
        kw["http_base_url"] = v.rstrip("/")
    if v := env.get("PDP_HTTP_CALLERS"):
        kw["http_callers"] = tuple(c.strip() for c in v.split(",") if c.strip())
    if v := env.get("PDP_AUTHZEN_MAPPING"):
        if not Path(v).is_file():
            raise ConfigError(f"PDP_AUTHZEN_MAPPING: {v!r} is not a readable file")
        kw["authzen_mapping"] = Path(v)
    return kw


def _console(env: Mapping[str, str]) -> dict[str, object]:
    """The approver console's settings."""
    kw: dict[str, object] = {}
    if v := env.get("PDP_CONSOLE_LISTEN"):
        kw["console_listen"] = _listen("PDP_CONSOLE_LISTEN", v)
    if (v := env.get("PDP_CONSOLE_DEV_LOGIN")) is not None:
        kw["console_dev_login"] = _bool("PDP_CONSOLE_DEV_LOGIN", v)
    return kw


def _hardening(env: Mapping[str, str]) -> dict[str, object]:
    """Authorisation, limits, rate and the OPA lock-down (docs/authorization.md)."""
    kw: dict[str, object] = {}
    if v := env.get("PDP_ROLES_FILE"):
        if not Path(v).is_file():
            raise ConfigError(f"PDP_ROLES_FILE: {v!r} is not a readable file")
        kw["roles_file"] = Path(v)
    for name, field in (
        ("PDP_ALLOW_INSECURE_NON_LOOPBACK", "allow_insecure_non_loopback"),
        ("PDP_ALLOW_OPA_API_DATA", "allow_opa_api_data"),
    ):
        if (v := env.get(name)) is not None:
            kw[field] = _bool(name, v)
    for name, field, lo, hi in (
        ("PDP_MAX_LIST_ENTRIES", "max_list_entries", 1, 1_000_000),
        ("PDP_MAX_STRING_CHARS", "max_string_chars", 16, 16 << 20),
        ("PDP_MAX_STRUCT_BYTES", "max_struct_bytes", 1024, 64 << 20),
        ("PDP_MAX_OUTCOME_BYTES", "max_outcome_bytes", 256, 16 << 20),
        ("PDP_DECIDE_RATE", "decide_rate", 0, 10_000_000),
        ("PDP_DECIDE_BURST", "decide_burst", 1, 10_000_000),
    ):
        if (v := env.get(name)) is not None:
            kw[field] = _int(name, v, lo, hi)
    if v := env.get("PDP_HEALTH_LISTEN"):
        kw["health_listen"] = _listen("PDP_HEALTH_LISTEN", v)
    return kw
