# METADATA
# title: Policy library helpers
# description: |
#   Builds reasons and escalations from the METADATA of the rule that yields them, so a
#   reason code is written once (in `custom.code`) and read back by the PDP.
package pdp.lib

# METADATA
# title: Reason
# description: A reason object for the PDP from the yielding rule's annotations.
reason(meta, message) := {
	"code": meta.custom.code,
	"severity": meta.custom.severity,
	"rule": meta.title,
	"message": message,
}

# METADATA
# title: Escalation
# description: |
#   A reason that asks for human approval: `count` distinct approvers holding `role` must
#   approve this exact action (see pdp.approvals).
escalation(meta, message, role, n) := object.union(reason(meta, message), {"approval": {"role": role, "count": n}})

# METADATA
# title: Weekday and minute of day
# description: The UTC weekday name and minutes since midnight of an RFC 3339 time.
day_and_minute(rfc3339) := [time.weekday(ns), (clock[0] * 60) + clock[1]] if {
	ns := time.parse_rfc3339_ns(rfc3339)
	clock := time.clock(ns)
}

# METADATA
# title: Within window
# description: |
#   True when the time falls on one of the window's days, at or after `from` and before
#   `to` (both "HH:MM", UTC).
within_window(rfc3339, window) if {
	[day, minute] := day_and_minute(rfc3339)
	day in window.days
	minute >= _minutes(window.from)
	minute < _minutes(window.to)
}

_minutes(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if parts := split(hhmm, ":")

# METADATA
# title: Screening key
# description: |
#   The form names and account identifiers are compared in for screening: Unicode
#   look-alikes and compatibility forms mapped to ASCII (data.pdp.lib.confusables: NFKC
#   letters and digits such as fullwidth forms, Latin letters with diacritics, and Cyrillic
#   and Greek homoglyphs), upper-cased, and every character that is not A-Z or 0-9 (spaces,
#   punctuation, zero-width characters) removed. "vostok  maritime-holdings" and an IBAN
#   written in lower case or in groups of four give the same key as the list entry.
#   Plain ASCII text skips the (costly) look-alike table.
screening_key(text) := _squash(_ascii_folded(text))

_ascii_folded(text) := text if regex.match(`^[\x00-\x7f]*$`, text)

_ascii_folded(text) := strings.replace_n(data.pdp.lib.confusables, text) if not regex.match(`^[\x00-\x7f]*$`, text)

_squash(text) := regex.replace(upper(text), `[^A-Z0-9]`, "")
