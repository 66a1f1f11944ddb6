"""Replay a signed decision log against a candidate policy: what would the change have decided?

The log is verified first (every signature, index and checkpoint: :func:`pdp.ledger.audit.verify_log`);
a log that does not verify is not replayed. Then each decision record's ``input`` (as recorded,
after masking) is evaluated against the candidate bundle on a real OPA, in batches through the
bundle's batch rule, and its outcome and reason codes compared with the recorded ones.

What masking prevents: fields masked by ``PDP_MASK_POINTERS`` or the policy (``**masked**``) and
erased fields are not in the log, so the candidate sees the mask where the live policy saw the
value. A rule that reads a masked field can decide differently on replay than it would have live;
the report counts the changes on masked inputs apart (``changes_on_masked_input``) so they are
read as "look closer", not as proof. Decisions made without a policy verdict (fail-closed) and the
PDP's own answers (kill switch, a budget reservation that did not fit, an approval already used:
:func:`pdp.verdict.made_by_pdp`) have nothing to compare against and are counted as skipped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from pdp.config import Settings
from pdp.errors import NoVerdict, PdpError
from pdp.ledger.audit import verify_log
from pdp.opa import OpaClient
from pdp.records import unverified_claims
from pdp.verdict import Verdict, fail_closed, interpret, made_by_pdp

ARROW = "->"
DEFAULT_FAIL_ON = ("deny->allow", "require_approval->allow")
"""Changes that grant more than before: by default any one of them fails the gate."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recorded:
    """One logged decision, as replay needs it."""

    log_index: int
    decision_id: str
    timestamp: str
    agent: str
    tool: str
    outcome: str
    reasons: tuple[str, ...]
    input: dict[str, Any]
    masked: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    """A decision the candidate decides differently."""

    log_index: int
    decision_id: str
    timestamp: str
    agent: str
    tool: str
    before: str
    after: str
    reasons_before: tuple[str, ...]
    reasons_after: tuple[str, ...]
    masked: bool

    @property
    def kind(self) -> str:
        """``before->after`` (e.g. ``deny->allow``), or ``reasons`` when only the reason codes differ."""
        return f"{self.before}{ARROW}{self.after}" if self.before != self.after else "reasons"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "log_index": self.log_index,
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "agent": self.agent,
            "tool": self.tool,
            "before": {"outcome": self.before, "reasons": list(self.reasons_before)},
            "after": {"outcome": self.after, "reasons": list(self.reasons_after)},
            "masked_input": self.masked,
        }


class Impact:
    """The changes a candidate makes, tallied by kind, agent, tool and reason code, with examples.

    Args:
        examples: how many example changes to keep per kind.
    """

    def __init__(self, *, examples: int = 5) -> None:
        self.replayed = 0
        self.skipped = 0
        self.masked_inputs = 0
        self.changed = 0
        self.changes_on_masked_input = 0
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.masked_by_kind: collections.Counter[str] = collections.Counter()
        self.by_agent: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.by_tool: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.reasons_added: collections.Counter[str] = collections.Counter()
        self.reasons_removed: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, list[Change]] = collections.defaultdict(list)
        self._keep = examples
        self.seconds = 0.0
        self.verify_seconds = 0.0

    def add(self, rec: Recorded, after: Verdict) -> None:
        """Counts one replayed decision against the candidate's verdict."""
        self.replayed += 1
        self.masked_inputs += rec.masked
        reasons_after = tuple(r.code for r in after.reasons)
        outcome = after.outcome.value
        if outcome == rec.outcome and sorted(reasons_after) == sorted(rec.reasons):
            return
        change = Change(
            log_index=rec.log_index,
            decision_id=rec.decision_id,
            timestamp=rec.timestamp,
            agent=rec.agent,
            tool=rec.tool,
            before=rec.outcome,
            after=outcome,
            reasons_before=rec.reasons,
            reasons_after=reasons_after,
            masked=rec.masked,
        )
        self.changed += 1
        self.changes_on_masked_input += rec.masked
        self.by_kind[change.kind] += 1
        self.masked_by_kind[change.kind] += rec.masked
        self.by_agent[rec.agent][change.kind] += 1
        self.by_tool[rec.tool][change.kind] += 1
        self.reasons_added.update(set(reasons_after) - set(rec.reasons))
        self.reasons_removed.update(set(rec.reasons) - set(reasons_after))
        if len(self.examples[change.kind]) < self._keep:
            self.examples[change.kind].append(change)

    def gate(self, *, fail_on: Sequence[str], max_changes: int | None, exclude_masked: bool = False) -> list[str]:
        """The thresholds crossed (empty: the candidate may pass); ``exclude_masked`` leaves the
        changes on masked input out of the count (they may be the mask's doing, not the candidate's)."""
        counts = self.by_kind - self.masked_by_kind if exclude_masked else self.by_kind
        crossed = [f"{counts[k]} {k} change(s)" for k in fail_on if counts.get(k)]
        changed = sum(counts.values())
        if max_changes is not None and changed > max_changes:
            crossed.append(f"{changed} changes in all (at most {max_changes} allowed)")
        return crossed

    def to_dict(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "skipped_without_verdict": self.skipped,
            "masked_inputs": self.masked_inputs,
            "changed": self.changed,
            "changes_on_masked_input": self.changes_on_masked_input,
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_kind_on_masked_input": dict(sorted((+self.masked_by_kind).items())),
            "by_agent": {a: dict(sorted(c.items())) for a, c in sorted(self.by_agent.items())},
            "by_tool": {t: dict(sorted(c.items())) for t, c in sorted(self.by_tool.items())},
            "reasons_added": dict(self.reasons_added.most_common()),
            "reasons_removed": dict(self.reasons_removed.most_common()),
            "examples": {k: [c.to_dict() for c in v] for k, v in sorted(self.examples.items())},
            "seconds": {"verify": round(self.verify_seconds, 3), "replay": round(self.seconds, 3)},
        }


class ReplayError(PdpError):
    """The replay could not run: the candidate OPA could not evaluate a batch."""


def read_log(
    log_dir: Path, *, jwks: dict[str, Any], since: float | None = None, until: float | None = None
) -> tuple[list[Recorded], int]:
    """Verifies the log, then returns its decision records in ``[since, until)`` (epoch seconds)
    and how many had no policy verdict to compare (failed closed, or the PDP's own answer).

    Raises:
        AuditError: the log does not verify (nothing is replayed).
    """
    entries: list[bytes] = []
    verify_log(log_dir, jwks=jwks, on_entry=lambda _, entry: entries.append(entry))  # one read of the files
    decisions: list[Recorded] = []
    skipped = 0
    for claims in map(unverified_claims, entries):
        pdp = claims.get("pdp", {})
        if pdp.get("type") != "decision" or not _within(claims.get("timestamp", ""), since, until):
            continue
        rules = (r.get("rule", "") for r in claims.get("result", {}).get("reasons", []) if isinstance(r, dict))
        if pdp.get("indeterminate") or made_by_pdp(rules):
            skipped += 1
            continue
        decisions.append(
            Recorded(
                log_index=int(pdp["log_index"]),
                decision_id=claims["decision_id"],
                timestamp=claims.get("timestamp", ""),
                agent=str(pdp.get("agent", {}).get("id", "")),
                tool=str(pdp.get("tool", "")),
                outcome=str(pdp.get("outcome", "")),
                reasons=tuple(pdp.get("reasons", [])),
                input=claims["input"],
                masked=bool(claims.get("masked") or claims.get("erased")),
            )
        )
    return decisions, skipped


def _within(timestamp: str, since: float | None, until: float | None) -> bool:
    if since is None and until is None:
        return True
    try:
        t = datetime.datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return False
    return (since is None or t >= since) and (until is None or t < until)


def replay(
    decisions: Sequence[Recorded],
    *,
    opa_url: str,
    batch_path: str = Settings.batch_path,
    batch_size: int = 100,
    workers: int = 2,
    impact: Impact | None = None,
    progress: Progress | None = None,
) -> Impact:
    """Evaluates each decision's recorded input against the OPA at ``opa_url`` and tallies the changes.

    Raises:
        ReplayError: the candidate OPA cannot evaluate a batch (down, no batch rule, wrong shape).
    """
    impact = impact or Impact()
    client = OpaClient(opa_url, Settings.decision_path, batch_path=batch_path)
    batches = [decisions[i : i + batch_size] for i in range(0, len(decisions), batch_size)]

    def evaluate(batch: Sequence[Recorded]) -> list[Verdict]:
        try:
            answers = client.query_batch([d.input for d in batch], timeout_s=60.0)
        except NoVerdict as e:
            raise ReplayError(f"the candidate OPA could not evaluate a batch: {e}") from None
        return [_verdict(a.result, a.defined) for a in answers]

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay") as pool:
        for batch, verdicts in zip(batches, pool.map(evaluate, batches), strict=True):
            for rec, verdict in zip(batch, verdicts, strict=True):
                impact.add(rec, verdict)
            if progress is not None:
                progress.advance(len(batch))
    impact.seconds += time.perf_counter() - start
    if progress is not None:
        progress.done()
    return impact


def _verdict(result: Any, defined: bool) -> Verdict:
    """The candidate's verdict; a result the contract rejects is the fail-closed DENY the PDP would give."""
    try:
        return interpret(result, defined=defined)
    except NoVerdict as e:
        return fail_closed(e)


class Progress:
    """A one-line progress bar on a stream (stderr), redrawn at most 10 times a second.

    Args:
        total: how many items.
        stream: where to draw.
        label: what is counted.
    """

    def __init__(self, *, total: int, stream: IO[str] = sys.stderr, label: str = "replayed") -> None:
        self._total = max(total, 1)
        self._stream = stream
        self._label = label
        self._n = 0
        self._start = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self._n += n
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._draw(now)

    def done(self) -> None:
        self._draw(time.monotonic())
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self, now: float) -> None:
        self._drawn = now
        share = min(self._n / self._total, 1.0)
        bar = "#" * int(share * 30)
        rate = self._n / max(now - self._start, 1e-9)
        self._stream.write(f"\r{self._label} [{bar:<30}] {share:4.0%} {self._n}/{self._total} decisions, {rate:,.0f}/s")
        self._stream.flush()


def kinds(text: str) -> tuple[str, ...]:
    """Parses ``--fail-on``: comma-separated ``before->after`` (or ``reasons``); ``none`` for no kind.

    Raises:
        ValueError: an unknown outcome is named.
    """
    if text.strip().lower() == "none":
        return ()
    outcomes = {"allow", "deny", "require_approval"}
    out = []
    for part in (p.strip().replace("→", ARROW) for p in text.split(",") if p.strip()):
        if part != "reasons":
            before, _, after = part.partition(ARROW)
            if before not in outcomes or after not in outcomes or before == after:
                raise ValueError(f"{part!r} is not before->after of allow, deny, require_approval (or 'reasons')")
        out.append(part)
    return tuple(out)


def html_page(report: dict[str, Any], *, title: str) -> str:
    """A readable, self-contained HTML page of a replay report (no scripts, no external assets)."""
    from html import escape

    def table(head: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
        th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"

    impact = report["impact"]
    kinds_seen = list(impact["by_kind"])
    verdict = "FAILED: " + "; ".join(report["gate"]["crossed"]) if report["gate"]["crossed"] else "passed"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p class=gate>Gate: <strong>{escape(verdict)}</strong> (fails on: "
        f"{escape(', '.join(report['gate']['fail_on']) or 'nothing')}; max changes: "
        f"{escape(str(report['gate']['max_changes']))})</p>",
        table(
            ["log", "candidate bundle", "decisions replayed", "changed", "changes on masked input", "skipped"],
            [
                [
                    report["log"],
                    report["bundle"],
                    impact["replayed"],
                    impact["changed"],
                    impact["changes_on_masked_input"],
                    impact["skipped_without_verdict"],
                ]
            ],
        ),
        "<h2>Changes by kind</h2>",
        table(["kind", "decisions"], impact["by_kind"].items()),
        "<h2>By agent</h2>",
        table(["agent", *kinds_seen], [[a, *(c.get(k, 0) for k in kinds_seen)] for a, c in impact["by_agent"].items()]),
        "<h2>By tool</h2>",
        table(["tool", *kinds_seen], [[t, *(c.get(k, 0) for k in kinds_seen)] for t, c in impact["by_tool"].items()]),
        "<h2>Reason codes</h2>",
        table(
            ["reason code", "newly given", "no longer given"],
            [
                [r, impact["reasons_added"].get(r, 0), impact["reasons_removed"].get(r, 0)]
                for r in sorted(set(impact["reasons_added"]) | set(impact["reasons_removed"]))
            ],
        ),
        "<h2>Examples</h2>",
        table(
            ["kind", "log index", "decision", "agent", "tool", "before", "after", "masked input"],
            [
                [
                    e["kind"],
                    e["log_index"],
                    e["decision_id"],
                    e["agent"],
                    e["tool"],
                    f"{e['before']['outcome']} {', '.join(e['before']['reasons'])}",
                    f"{e['after']['outcome']} {', '.join(e['after']['reasons'])}",
                    "yes" if e["masked_input"] else "",
                ]
                for examples in impact["examples"].values()
                for e in examples
            ],
        ),
        "<p class=note>Inputs are replayed as recorded, after masking: a rule that reads a masked field sees "
        "<code>**masked**</code>, so changes on masked input deserve a closer look.</p>",
    ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
