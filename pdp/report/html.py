"""The report as one self-contained HTML page: inline CSS and SVG, no script, no external asset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from pdp.policy.catalog import Catalog, anchor
from pdp.report import plots
from pdp.report.figures import OUTCOMES

SECTIONS = (
    ("summary", "Summary"),
    ("over-time", "Decisions over time"),
    ("autonomy", "Autonomy and escalation"),
    ("rules", "Policy rules"),
    ("audit", "Audit completeness"),
    ("kill-switch", "Kill switch"),
    ("shadow", "Shadow candidates"),
    ("lineage", "Data lineage"),
    ("latency", "Decision latency"),
    ("denials", "Top denied agents and tools"),
    ("agents", "Per-agent activity"),
    ("privacy", "Masked and erased fields"),
    ("provenance", "Provenance"),
    ("catalog", "Policy catalog"),
)
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:0 16px 48px;color:#212121}
h1{font-size:22px;margin:24px 0 4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}code,pre{font-size:12px}
pre{background:#f5f5f5;padding:8px;overflow-x:auto}.note{color:#555;font-style:italic}.key{margin-right:12px}
nav a{margin-right:10px}.plot{display:block;margin:8px 0;max-width:100%;height:auto}
"""
MAX_AGENTS = 50


def render(figures: Mapping[str, Any], *, catalog: Catalog | None) -> str:
    """The HTML page for these figures (``catalog``: rules to list and link reason codes to)."""
    f = figures
    body = [
        f"<h1>Governance report: {escape(f['provenance']['checkpoint']['origin'])}</h1>",
        f'<p class="note">Computed from the verified signed log up to checkpoint size '
        f"{f['provenance']['checkpoint']['size']}; period {_period(f['period'])}.</p>",
        "<nav>" + "".join(f'<a href="#{sid}">{escape(t)}</a>' for sid, t in SECTIONS) + "</nav>",
        _section("summary", _summary(f)),
        _section("over-time", _over_time(f["decisions"]["over_time"])),
        _section("autonomy", _autonomy(f["autonomy"], f["escalations"])),
        _section("rules", _rules(f["rules"])),
        _section("audit", _audit(f["audit"])),
        _section("kill-switch", _kill_switch(f["kill_switch"], f["escalations"])),
        _section("shadow", _shadow(f["shadow"])),
        _section("lineage", _lineage(f["lineage"])),
        _section("latency", _latency(f["latency"])),
        _section("denials", _denials(f["denials"])),
        _section("agents", _agents(f["agents"])),
        _section("privacy", _privacy(f["privacy"])),
        _section("provenance", _provenance(f["provenance"])),
        _section("catalog", _catalog(catalog)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>PDP governance report</title><style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def _section(sid: str, content: str) -> str:
    title = dict(SECTIONS)[sid]
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{content}</section>'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return '<p class="note">None.</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(_td(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _td(value: Any) -> str:
    if isinstance(value, _Raw):
        return f"<td>{value}</td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n">{value:g}</td>' if isinstance(value, float) else f'<td class="n">{value}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


class _Raw(str):
    """HTML already escaped."""


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>' if text else ""


def _period(p: Mapping[str, Any]) -> str:
    since, until = p["since"] or "the beginning", p["until"] or "the end"
    return escape(f"{since} to {until} (decisions from {p['first_decision']} to {p['last_decision']})")


def _code(code: str, anchor: str | None) -> _Raw:
    return _Raw(
        f'<a href="#{escape(anchor)}"><code>{escape(code)}</code></a>' if anchor else f"<code>{escape(code)}</code>"
    )


def _summary(f: Mapping[str, Any]) -> str:
    d, a, audit = f["decisions"], f["autonomy"], f["audit"]
    rows = [
        ("decisions", d["total"]),
        *((f"  {k}", d["by_outcome"][k]) for k in OUTCOMES),
        ("autonomy rate", _pct(a["autonomy_rate"])),
        ("escalation rate", _pct(a["escalation_rate"])),
        ("allows with an outcome report", _pct(audit["outcome_coverage"])),
        ("fail-closed decisions", audit["fail_closed"]["total"]),
        ("denied by the kill switch", sum(f["kill_switch"]["denied_by_code"].values())),
        ("shadow divergences", f["shadow"]["divergences"]),
    ]
    return _table(("figure", "value"), rows)


def _over_time(ot: Mapping[str, Any]) -> str:
    keys = list(OUTCOMES)
    return f"<p>{plots.legend(keys)} (buckets of {ot['bucket_s']} s, UTC)</p>" + plots.stacked_bars(
        ot["buckets"], keys, title="decisions over time by outcome"
    )


def _autonomy(a: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    rows = [
        ("autonomy rate (allowed without a human)", _Raw(plots.meter(a["autonomy_rate"], title="autonomy rate"))),
        ("escalation rate (require_approval)", _Raw(plots.meter(a["escalation_rate"], title="escalation rate"))),
        ("approval rate (escalation records)", _Raw(plots.meter(e["approval_rate"], title="approval rate"))),
    ]
    t2a = e["time_to_approval_s"]
    waits = "n/a" if not t2a else ", ".join(f"{k} {v}" for k, v in t2a.items())
    return (
        _table(("figure", "value"), rows)
        + _table(
            ("allowed without a human", "allowed after approval", "escalations opened", "time to approval (s)"),
            [(a["allowed_without_human"], a["allowed_after_approval"], e["opened"], waits)],
        )
        + _note(e["note"])
    )


def _rules(r: Mapping[str, Any]) -> str:
    fired = r["fired"]
    items = [(code, float(v["count"]), f"#{v['catalog']}" if v["catalog"] else None) for code, v in fired.items()]
    items.sort(key=lambda i: -i[1])
    rows = [
        (
            _code(code, v["catalog"]),
            v["count"],
            _pct(v["fire_rate"]),
            _most(v["by_agent"]),
            _most(v["by_tool"]),
        )
        for code, v in fired.items()
    ]
    never = (
        _note("Run with --bundle to list the rules of the bundle that never fired.")
        if r["never_fired"] is None
        else "<h3>Rules that never fired in the period</h3>"
        + (
            "<ul>" + "".join(f"<li>{_code(c, anchor(c))}</li>" for c in r["never_fired"]) + "</ul>"
            if r["never_fired"]
            else _note("Every rule of the bundle fired.")
        )
    )
    missing = (
        ""
        if not r["not_in_catalog"]
        else "<h3>Reason codes that fired but are not in the bundle's catalog</h3>"
        + "<ul>"
        + "".join(f"<li>{_code(c, None)}</li>" for c in r["not_in_catalog"])
        + "</ul>"
    )
    own = (
        ""
        if not r["pdp_codes"]
        else "<h3>The PDP's own reason codes</h3>"
        + _note("Given by the PDP itself (kill switch, budget reservation, single-use approvals), not by a rule.")
        + "<ul>"
        + "".join(f"<li>{_code(c, fired[c]['catalog'])}</li>" for c in r["pdp_codes"])
        + "</ul>"
    )
    return (
        plots.hbars(items, title="reason-code fire counts")
        + _table(("reason code", "fired", "of decisions", "top agents", "top tools"), rows)
        + never
        + missing
        + own
    )


def _most(counts: Mapping[str, int], shown: int = 5) -> str:
    """The ``shown`` largest counts, and how many more there are (all of them are in the JSON)."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    more = f" (+{len(top) - shown} more)" if len(top) > shown else ""
    return ", ".join(f"{k}: {n}" for k, n in top[:shown]) + more


def _audit(a: Mapping[str, Any]) -> str:
    fc = a["fail_closed"]
    rows = [
        ("ALLOW decisions", a["allows"]),
        ("with an outcome report", a["allows_with_outcome"]),
        ("outcome coverage", _Raw(plots.meter(a["outcome_coverage"], title="outcome coverage"))),
        ("past their exp with no report", a["allows_overdue"]),
        ("not yet expired, no report yet", a["allows_pending"]),
    ]
    return (
        _table(("figure", "value"), rows)
        + "<h3>Fail-closed decisions by code</h3>"
        + plots.hbars([(k, float(v), None) for k, v in fc["by_code"].items()], title="fail-closed decisions by code")
        + _table(("code", "decisions"), [(_code(k, None), v) for k, v in fc["by_code"].items()])
        + "<h3>Overdue ALLOWs (first 20)</h3>"
        + _table(("decision", "agent", "tool"), [(o["decision_id"], o["agent"], o["tool"]) for o in a["overdue"]])
    )


def _kill_switch(k: Mapping[str, Any], e: Mapping[str, Any]) -> str:
    denied = k["denied_by_code"]
    changes = [
        (
            c["action"],
            c["kind"],
            c["value"],
            c["by"] + (f" ({c['operator']})" if c["operator"] else ""),
            c["reason"],
            c["at"],
            c["until"] or ("until resumed" if c["action"] == "suspend" else ""),
            len(c["closed_escalations"]),
        )
        for c in k["changes"]
    ]
    return (
        _table(
            ("suspended", "resumed", "escalations closed", "of those opened in the period"),
            [(k["suspended"], k["resumed"], k["escalations_closed"], e["by_state"]["closed_by_kill_switch"])],
        )
        + "<h3>Suspensions and resumes</h3>"
        + _table(("action", "kind", "value", "by", "reason", "at", "until", "escalations closed"), changes)
        + _note(k["note"])
        + "<h3>Decisions denied by the kill switch</h3>"
        + plots.hbars([(c, float(n), None) for c, n in denied.items()], title="decisions denied by the kill switch")
        + _table(("reason code", "decisions"), [(_code(c, None), n) for c, n in denied.items()])
    )


def _shadow(s: Mapping[str, Any]) -> str:
    kinds = sorted(s["by_kind"].items(), key=lambda kv: (-kv[1], kv[0]))
    revisions = [(name, rev, n) for name, revs in s["candidates"].items() for rev, n in revs.items()]
    return (
        f"<p>Decisions of the period on which a candidate policy diverged from the live one: {s['divergences']}.</p>"
        + _note(s["note"])
        + "<h3>Divergences by kind</h3>"
        + plots.hbars([(kind, float(n), None) for kind, n in kinds], title="shadow divergences by kind")
        + _table(("kind", "divergences"), kinds)
        + "<h3>Candidate bundle revisions</h3>"
        + _table(("bundle", "revision", "divergences"), revisions)
    )


def _lineage(lin: Mapping[str, Any]) -> str:
    rows = [
        ("decisions with a provenance summary", lin["decisions_with_summary"]),
        ("on classified data", lin["on_classified_data"]),
        ("with verified lineage", lin["with_verified_lineage"]),
        ("lineage completeness", _Raw(plots.meter(lin["completeness"], title="lineage completeness"))),
    ]
    return _table(("figure", "value"), rows) + _note(lin["note"])


def _latency(lat: Mapping[str, Any]) -> str:
    parts = []
    for name, p in lat["timers"].items():
        if not p:
            continue
        items = [(k, p[k] / 1e6, None) for k in ("p50", "p90", "p99", "max")]
        parts.append(f"<h3><code>{escape(name)}</code> ({p['count']} decisions)</h3>")
        parts.append(plots.hbars(items, title=f"{name} percentiles", unit=" ms"))
    return "".join(parts) or _note("No decision in the period carries timers.")


def _denials(d: Mapping[str, Any]) -> str:
    return (
        "<h3>Agents</h3>"
        + plots.hbars([(n, float(c), None) for n, c in d["top_agents"]], title="top denied agents")
        + "<h3>Tools</h3>"
        + plots.hbars([(n, float(c), None) for n, c in d["top_tools"]], title="top denied tools")
    )


def _agents(agents: Mapping[str, Any]) -> str:
    busiest = sorted(agents.items(), key=lambda kv: (-kv[1]["decisions"], kv[0]))[:MAX_AGENTS]
    rows = [
        (name, a["decisions"], *(a[k] for k in OUTCOMES), ", ".join(a["tools"]), a["first"], a["last"])
        for name, a in busiest
    ]
    more = _note(f"{len(agents) - MAX_AGENTS} less active agents are in the JSON.") if len(agents) > MAX_AGENTS else ""
    return _table(("agent", "decisions", *OUTCOMES, "tools", "first", "last"), rows) + more


def _privacy(p: Mapping[str, Any]) -> str:
    rows = [("masked", k, v) for k, v in p["masked"].items()] + [("erased", k, v) for k, v in p["erased"].items()]
    return (
        f"<p>{p['decisions_masked']} decisions had input fields masked and {p['decisions_erased']} had fields "
        "erased before signing.</p>" + _table(("how", "JSON pointer", "decisions"), rows)
    )


def _provenance(p: Mapping[str, Any]) -> str:
    cp, lg = p["checkpoint"], p["log"]
    bundles = [(name, rev, n) for name, revs in p["bundles"].items() for rev, n in revs.items()]
    return (
        _table(
            ("origin", "size", "root (base64)"),
            [(cp["origin"], cp["size"], _Raw(f"<code>{escape(cp['root_base64'])}</code>"))],
        )
        + f"<p>Signed checkpoint the figures were computed from:</p><pre>{escape(cp['note'])}</pre>"
        + f"<p>{lg['entries_verified']} entries and {lg['checkpoints']} checkpoints verified; "
        f"{lg['entries_after_checkpoint']} entries after this checkpoint are not in the figures.</p>"
        + "<h3>Bundle revisions that decided</h3>"
        + _table(("bundle", "revision", "decisions"), bundles)
        + "<h3>Records in the log</h3>"
        + _table(("type", "records"), list(p["records"].items()))
        + _note(
            "Unknown record types (counted, not read): " + ", ".join(p["unknown_record_types"])
            if p["unknown_record_types"]
            else ""
        )
        + _note(
            "Records the schema cannot read (counted, not in the figures): "
            + ", ".join(f"{k} {v}" for k, v in p["unreadable_records"].items())
            if p["unreadable_records"]
            else ""
        )
        + "<h3>Verifier keys</h3>"
        + _table(("JWKS kid",), [(k,) for k in p["keys"]["kids"]])
        + _table(
            ("note verifier key",), [(_Raw(f"<code>{escape(k)}</code>"),) for k in p["keys"]["note_verifier_keys"]]
        )
    )


def _catalog(catalog: Catalog | None) -> str:
    if catalog is None:
        return _note("No bundle given (--bundle): reason codes are not linked to rules.")
    rows = [
        (
            _Raw(f'<span id="{r.anchor}"><code>{escape(r.code)}</code></span>'),
            r.severity,
            r.pack,
            r.title,
            r.description,
            "n/a" if r.coverage is None else f"{r.coverage:g}%",
        )
        for r in catalog.rules
    ]
    return (
        f"<p>Bundle <code>{escape(catalog.bundle)}</code> revision <code>{escape(catalog.revision)}</code>.</p>"
        + _table(("code", "severity", "pack", "title", "description", "test coverage"), rows)
    )
