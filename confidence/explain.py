"""Why did this context get this variant? The resolver's own trace of one flag.

`ConfidenceProvider.explain(flag_key, context)`, `python -m confidence explain` and the
emulator's `/v1/explain` all return the trace the resolver (resolver.wasm, `cr_explain`)
records while resolving the flag exactly as a normal resolve does: the same rule loop,
targeting evaluation and bucketing, only with its hooks switched on. Nothing is logged: an
explain sends no exposure and counts in no resolve statistics, and a materialization
write it would make is reported (`Explanation.writes`), never stored.

Invariant: `Explanation.variant`, `.rule` and `.assignment_id` equal what a normal resolve
of the same flag, state and context returns (tests/wasm/test_explain.py checks it over the
conformance state with random contexts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "AssignmentTrace",
    "BitsetTrace",
    "Bucketing",
    "CriterionTrace",
    "Explanation",
    "MaterializationRead",
    "RuleTrace",
    "SegmentTrace",
    "TargetingKey",
]

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
#: A three-valued match: True, False, or None while a materialization read is unknown
#: (or when the evaluation failed on an unrecognized rule).
Match: TypeAlias = "bool | None"
#: A line of the rendered tree and its children.
_Node: TypeAlias = "tuple[str, list[_Node]]"
#: The resolver's explain document, as `json.loads` returns it (read by key, unchecked:
#: the guest writes it, resolver/README.md), hence `Mapping[str, Any]` below.


@dataclass(frozen=True, slots=True)
class TargetingKey:
    """The unit lookup of a rule: `seen` is the raw context value (None when missing)."""

    selector: str
    seen: JsonValue
    unit: str | None


@dataclass(frozen=True, slots=True)
class CriterionTrace:
    """One criterion the resolver evaluated (short-circuited ones are absent).

    `kind`: "attribute", "segment" (a segment reference; `segment` holds its evaluation),
    "materialized_segment" (`source`: "bloom_filter", "store" or "no_unit") or "missing".
    For an attribute that did not match, `reason` is one of `missing_attribute`,
    `wrong_type`, `out_of_range`, `not_in_list`, `not_equal`, `prefix_mismatch`,
    `suffix_mismatch`, `substring_missing`, `not_null`, `empty_list`, `rule_never_matches`,
    `unrecognized_rule`.
    """

    id: str
    kind: str
    matched: Match
    attribute: str | None = None
    rule: Mapping[str, JsonValue] | None = None
    seen: JsonValue = None
    present: bool = False
    reason: str | None = None
    segment: SegmentTrace | None = None
    materialization: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class BitsetTrace:
    """The segment's allocation bitset: the unit's index (None without a unit)."""

    index: int | None
    allocated: bool


@dataclass(frozen=True, slots=True)
class SegmentTrace:
    name: str
    criteria: tuple[CriterionTrace, ...]
    targeting: Match
    bitset: BitsetTrace | None
    matched: Match
    #: "segment_missing", "segment_cycle", "unrecognized_rule", ... when not evaluated.
    note: str | None = None
    #: Evaluated for a materialization read: targeting only, no bitset.
    targeting_only: bool = False


@dataclass(frozen=True, slots=True)
class AssignmentTrace:
    id: str
    kind: str  # "variant", "fallthrough" or "client_default"
    variant: str | None
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Bucketing:
    """`bucket = hash(salt + "|" + unit) mod bucket_count`; `assignment` is the one whose
    range holds it (None: the bucket is outside every range). A full rollout takes its
    single assignment without hashing (`bucket` None)."""

    unit: str | None
    salt: str
    bucket: int | None
    bucket_count: int
    full_rollout: bool
    assignment: AssignmentTrace | None


@dataclass(frozen=True, slots=True)
class MaterializationRead:
    materialization: str
    answer: str  # "recorded", "not_recorded" or "unknown"
    variant: str | None


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule, in flag order, up to the rule that decided.

    `outcome`: "match", "match_client_default", "fallthrough", or why the rule was passed
    over (`rule_disabled`, `environment_not_matched`, `segment_missing`,
    `targeting_key_missing`, `no_assignment_spec`, `segment_not_matched`,
    `unrecognized_targeting_rule`, `no_unit_for_bucketing`, `bucket_not_allocated`,
    `materialization_must_match`, ...) or why evaluation stopped (`targeting_key_error`,
    `materialization_not_supported`).
    """

    name: str
    segment: str
    enabled: bool
    environments: tuple[str, ...]
    outcome: str
    targeting_key: TargetingKey | None
    segments: tuple[SegmentTrace, ...]
    bucketing: Bucketing | None
    materialization_read: MaterializationRead | None
    sticky_variant: str | None
    materialization_write: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """The whole trace of one flag for one context.

    `presence` is "resolved", or why the flag is absent from every resolve for this client
    ("not_found", "archived", "inactive", "not_enabled_for_client"; then `rules` is empty
    and an evaluation returns the default with FLAG_NOT_FOUND). `reason` is the resolver's
    reason name (MATCH, NO_SEGMENT_MATCH, FLAG_ARCHIVED, TARGETING_KEY_ERROR, ...).
    """

    flag: str
    client: str
    presence: str
    rules: tuple[RuleTrace, ...]
    reason: str
    variant: str
    value: Mapping[str, JsonValue] | None
    rule: str
    segment: str
    assignment_id: str
    unit: str | None
    should_apply: bool
    fallthroughs: tuple[Mapping[str, str], ...]
    writes: tuple[tuple[str, str, str, str], ...]
    #: The resolver's JSON document, as `--json` prints it.
    document: Mapping[str, JsonValue]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.document, indent=indent, ensure_ascii=False)

    def render(self) -> str:
        """A readable tree (what `python -m confidence explain` prints)."""
        return render(self)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Explanation:  # the explain document
        return _explanation(doc)


# -- parsing the resolver's document -----------------------------------------------------------


def _match(v: object) -> Match:
    return v if isinstance(v, bool) else None


def _assignment(d: object) -> AssignmentTrace | None:
    if not isinstance(d, dict):
        return None
    return AssignmentTrace(
        id=d["id"],
        kind=d["kind"] or "",
        variant=d.get("variant"),
        ranges=tuple((int(r[0]), int(r[1])) for r in d["ranges"]),
    )


def _criterion(d: Mapping[str, Any]) -> CriterionTrace:  # the explain document
    seg = d.get("segment")
    return CriterionTrace(
        id=d["id"],
        kind=d["kind"],
        matched=_match(d["matched"]),
        attribute=d.get("attribute"),
        rule=d.get("rule"),
        seen=d.get("seen"),
        present=bool(d.get("present", False)),
        reason=d.get("reason"),
        segment=_segment(seg) if isinstance(seg, dict) else None,
        materialization=d.get("materialization"),
        source=d.get("source"),
    )


def _segment(d: Mapping[str, Any]) -> SegmentTrace:  # the explain document
    b = d.get("bitset")
    return SegmentTrace(
        name=d["name"],
        criteria=tuple(_criterion(c) for c in d["criteria"]),
        targeting=_match(d["targeting"]),
        bitset=BitsetTrace(b["index"], bool(b["allocated"])) if isinstance(b, dict) else None,
        matched=_match(d["matched"]),
        note=d.get("note"),
        targeting_only=bool(d.get("targeting_only", False)),
    )


def _rule(d: Mapping[str, Any]) -> RuleTrace:  # the explain document
    tk = d.get("targeting_key")
    bk = d.get("bucketing")
    mr = d.get("materialization_read")
    mw = d.get("materialization_write")
    sticky = d.get("sticky")
    return RuleTrace(
        name=d["name"],
        segment=d["segment"],
        enabled=bool(d["enabled"]),
        environments=tuple(d["environments"]),
        outcome=d["outcome"],
        targeting_key=TargetingKey(tk["selector"], tk["seen"], tk["unit"]) if tk else None,
        segments=tuple(_segment(s) for s in d["segments"]),
        bucketing=Bucketing(
            unit=bk["unit"],
            salt=bk["salt"],
            bucket=bk["bucket"],
            bucket_count=bk["bucket_count"],
            full_rollout=bool(bk["full_rollout"]),
            assignment=_assignment(bk["assignment"]),
        )
        if bk
        else None,
        materialization_read=MaterializationRead(mr["materialization"], mr["answer"], mr["variant"])
        if mr
        else None,
        sticky_variant=sticky["variant"] if sticky else None,
        materialization_write=(mw["materialization"], mw["variant"]) if mw else None,
    )


def _explanation(doc: Mapping[str, Any]) -> Explanation:  # the explain document
    return Explanation(
        flag=doc["flag"],
        client=doc["client"],
        presence=doc["presence"],
        rules=tuple(_rule(r) for r in doc["rules"]),
        reason=doc["reason"],
        variant=doc["variant"],
        value=doc["value"],
        rule=doc["rule"],
        segment=doc["segment"],
        assignment_id=doc["assignment_id"],
        unit=doc["unit"],
        should_apply=bool(doc["should_apply"]),
        fallthroughs=tuple(doc["fallthroughs"]),
        writes=tuple((w[0], w[1], w[2], w[3]) for w in doc["writes"]),
        document=doc,
    )


# -- the readable tree -------------------------------------------------------------------------


def _j(v: JsonValue) -> str:
    return json.dumps(v, ensure_ascii=False)


def _rule_text(rule: Mapping[str, JsonValue] | None) -> str:
    if not rule:
        return "?"
    op = rule.get("op")
    if op in ("any", "all"):
        inner = rule.get("inner")
        return f"{op}({_rule_text(inner if isinstance(inner, dict) else None)})"
    if op == "range":
        lo = (
            f"[{_j(rule['start_inclusive'])}"
            if "start_inclusive" in rule
            else f"({_j(rule['start_exclusive'])}"
            if "start_exclusive" in rule
            else "(-inf"
        )
        hi = (
            f"{_j(rule['end_inclusive'])}]"
            if "end_inclusive" in rule
            else f"{_j(rule['end_exclusive'])})"
            if "end_exclusive" in rule
            else "+inf)"
        )
        return f"in range {lo}, {hi}"
    if op == "in":
        return f"in {_j(rule.get('values'))}"
    if op == "eq" and rule.get("value") is None:
        return "is null"
    return f"{op} {_j(rule.get('value'))}"


def _yes_no(m: Match) -> str:
    return "matched" if m is True else "no match" if m is False else "unknown"


def _segment_lines(seg: SegmentTrace) -> list[_Node]:
    head = f"segment {seg.name}: {_yes_no(seg.matched)}"
    if seg.note:
        head += f" ({seg.note})"
    children: list[_Node] = []
    for c in seg.criteria:
        if c.kind == "attribute":
            seen = _j(c.seen) if c.present else "(missing)"
            text = f"{c.id}: {c.attribute} {_rule_text(c.rule)} - seen {seen}: {_yes_no(c.matched)}"
            if c.reason:
                text += f" ({c.reason})"
            children.append((text, []))
        elif c.kind == "segment" and c.segment is not None:
            children.append((f"{c.id}: segment reference", [*_segment_lines(c.segment)]))
        elif c.kind == "materialized_segment":
            children.append(
                (
                    f"{c.id}: in materialization {c.materialization} ({c.source}): "
                    f"{_yes_no(c.matched)}",
                    [],
                )
            )
        else:
            children.append((f"{c.id}: missing criterion: no match", []))
    if seg.targeting_only:
        children.append(("targeting only (materialized assignment)", []))
    elif seg.bitset is not None:
        where = f"index {seg.bitset.index}" if seg.bitset.index is not None else "no unit"
        alloc = "allocated" if seg.bitset.allocated else "not allocated"
        children.append((f"bitset: {where}, {alloc}", []))
    return [(head, children)]


def _rule_node(r: RuleTrace) -> _Node:
    children: list[_Node] = []
    if r.targeting_key is not None:
        tk = r.targeting_key
        seen = _j(tk.seen) if tk.seen is not None else "(missing)"
        unit = _j(tk.unit) if tk.unit is not None else "none"
        children.append((f"targeting key {tk.selector} = {seen} -> unit {unit}", []))
    if r.materialization_read is not None:
        m = r.materialization_read
        extra = f", variant {m.variant}" if m.variant else ""
        children.append((f"materialization read {m.materialization}: {m.answer}{extra}", []))
    for seg in r.segments:
        children.extend(_segment_lines(seg))
    if r.sticky_variant is not None:
        children.append((f"sticky variant {r.sticky_variant} (from the materialization)", []))
    if r.bucketing is not None:
        b = r.bucketing
        a = b.assignment
        if a is None:
            got: list[_Node] = [("no assignment holds this bucket", [])]
        else:
            ranges = ", ".join(f"[{lo}, {hi})" for lo, hi in a.ranges)
            what = f"variant {a.variant}" if a.variant else a.kind.replace("_", " ")
            got = [(f"assignment {a.id}, buckets {ranges}", [(what, [])])]
        if b.bucket is None:
            children.append(("full rollout (no bucketing)", got))
        else:
            head = f"bucket {b.bucket} of {b.bucket_count} (salt {_j(b.salt)}, unit {_j(b.unit)})"
            children.append((head, got))
    if r.materialization_write is not None:
        written, v = r.materialization_write
        children.append((f"would write materialization {written}: variant {_j(v)}", []))
    state = "" if r.enabled else " (disabled)"
    return (f"rule {r.name}{state} -> {r.outcome}", children)


def _draw(node: _Node, prefix: str, last: bool, out: list[str]) -> None:
    text, children = node
    out.append(f"{prefix}{'`- ' if last else '|- '}{text}")
    inner = prefix + ("   " if last else "|  ")
    for i, child in enumerate(children):
        _draw(child, inner, i == len(children) - 1, out)


def render(e: Explanation) -> str:
    if e.presence != "resolved":
        return (
            f"{e.flag}: {e.presence.replace('_', ' ')} for {e.client} -> reason {e.reason}\n"
            "  the resolver leaves it out of every response: an evaluation returns the "
            "default (FLAG_NOT_FOUND)"
        )
    lines = [
        f"{e.flag} for {e.client}",
        f"  variant: {e.variant or '(none: the default value)'}",
        f"  reason:  {e.reason}",
    ]
    if e.rule:
        lines.append(f"  rule:    {e.rule}")
    if e.assignment_id:
        lines.append(f"  assignment: {e.assignment_id}")
    if not e.rules:
        lines.append("(the flag has no rules)")
    for i, r in enumerate(e.rules):
        _draw(_rule_node(r), "", i == len(e.rules) - 1, lines)
    for f in e.fallthroughs:
        lines.append(f"fallthrough recorded: rule {f['rule']}, assignment {f['assignment_id']}")
    for unit, mat, rule, v in e.writes:
        lines.append(f"materialization write (not stored by explain): {mat} {unit} {rule} -> {v!r}")
    return "\n".join(lines)
