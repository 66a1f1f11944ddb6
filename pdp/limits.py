"""Limits all the way down: Struct values (tool arguments, attributes, outcome reports) → Python,
refused past a depth, a number of entries per list or object, a number of characters per string
or key, or a total size, and refused when a number is not finite. The error names the path
(``context.action.arguments.payees[3].name``), so the caller knows what to shorten.

Also the per-caller rate limit on Decide: one token bucket per caller identity.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from typing import Any

from google.protobuf import struct_pb2

from pdp.errors import InvalidArgument, RateLimited

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on one Struct field (PDP_MAX_DEPTH, PDP_MAX_LIST_ENTRIES, PDP_MAX_STRING_CHARS, PDP_MAX_STRUCT_BYTES)."""

    max_depth: int = 16
    max_entries: int = 1000
    max_chars: int = 16384
    max_bytes: int = 256 * 1024


_configured = Limits()


def configure(limits: Limits) -> None:
    """Sets the process's limits (from the settings, when the server is built)."""
    global _configured  # noqa: PLW0603  (one set of limits per process, like the settings it comes from)
    _configured = limits


def configured(*, max_depth: int) -> Limits:
    """The process's limits, with this field's depth."""
    return dataclasses.replace(_configured, max_depth=max_depth)


def struct_to_dict(s: struct_pb2.Struct, field: str, limits: Limits) -> dict[str, Any]:
    """A Struct field as a dict (what ``json_format.MessageToDict`` gives), within ``limits``.

    Raises:
        InvalidArgument: a limit is exceeded or a number is NaN or infinite; names the path.
    """
    walk = _Walk(limits, field)
    return walk.struct(s, field, 1)


class _Walk:
    def __init__(self, limits: Limits, field: str) -> None:
        self._limits = limits
        self._field = field
        self._left = limits.max_bytes

    def _charge(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise InvalidArgument(self._field, f"is larger than {self._limits.max_bytes} bytes in all")

    def _entries(self, n: int, path: str) -> None:
        if n > self._limits.max_entries:
            raise InvalidArgument(path, f"has {n} entries; at most {self._limits.max_entries} are allowed")

    def _text(self, s: str, path: str) -> str:
        if len(s) > self._limits.max_chars:
            raise InvalidArgument(path, f"is {len(s)} characters long; at most {self._limits.max_chars} are allowed")
        self._charge(len(s) + 2)
        return s

    def _depth(self, depth: int, path: str) -> None:
        if depth > self._limits.max_depth:
            raise InvalidArgument(path, f"nests deeper than {self._limits.max_depth} levels")

    def struct(self, s: struct_pb2.Struct, path: str, depth: int) -> dict[str, Any]:
        self._depth(depth, path)
        self._entries(len(s.fields), path)
        out: dict[str, Any] = {}
        for key, value in s.fields.items():
            where = f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{key[:64]!r}]"
            out[self._text(key, f"{where} (key)")] = self.value(value, where, depth + 1)
        return out

    def value(self, v: struct_pb2.Value, path: str, depth: int) -> Any:
        self._depth(depth, path)  # a scalar is a level too
        kind = v.WhichOneof("kind")
        if kind == "struct_value":
            return self.struct(v.struct_value, path, depth)
        if kind == "list_value":
            items = v.list_value.values
            self._entries(len(items), path)
            return [self.value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(items)]
        self._charge(8)
        if kind == "string_value":
            return self._text(v.string_value, path)
        if kind == "number_value":
            if not math.isfinite(v.number_value):
                raise InvalidArgument(path, f"is {v.number_value}: numbers must be finite")
            return v.number_value
        if kind == "bool_value":
            return v.bool_value
        return None  # null_value, or no kind at all (as MessageToDict reads it)


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second on average, ``burst`` at once.

    Args:
        rate: tokens added per second (0: no limit).
        burst: the bucket's size.
        max_callers: buckets kept at most; the longest-full ones are dropped first.
    """

    def __init__(self, *, rate: float, burst: int, max_callers: int = 100_000) -> None:
        self._rate, self._burst, self._max = rate, float(burst), max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller → (tokens, when)
        self._lock = threading.Lock()

    def take(self, caller: str, n: int = 1) -> None:
        """Takes ``n`` tokens for ``caller``.

        Raises:
            RateLimited: the caller is over its rate; nothing was taken.
        """
        if self._rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, when = self._buckets.pop(caller, (self._burst, now))
            tokens = min(self._burst, tokens + (now - when) * self._rate)
            if tokens < n:
                self._buckets[caller] = (tokens, now)
                raise RateLimited(
                    f"caller {caller or '(anonymous)'} is over its rate of {self._rate:g} decisions a second "
                    f"(PDP_DECIDE_RATE); retry later"
                )
            self._buckets[caller] = (tokens - n, now)  # re-inserted last: the dict is oldest-first
            while len(self._buckets) > self._max:
                del self._buckets[next(iter(self._buckets))]
