"""The fields of a record fed lazily, from its head and its cached tail: PATH heads
come up again and again (cached whole), SYSCALL heads are new every time but name the
same fields in the same order (a template per tail)."""

from __future__ import annotations

from listener.sources.auditparse.fields import (
    _ENCODED_FIELDS,
    _NOT_SEPARATORS,
    CACHE_MAX,
    HEAD_CACHE_MAX,
    fields_fast,
)

# Heads of PATH records (item, name, inode) -> (their fields, the tail they were last
# merged with, head and tail merged), see path_fields.
PATH_HEADS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {}


def path_fields(head: str, tail: dict[str, str]) -> dict[str, str] | None:
    """``fields_fast(head)`` updated with ``tail``: the fields of a PATH record, from the
    cache when the head was seen before (with the same tail: a copy, no merge).

    Tails are cached and never changed, so the same object means the same fields.
    None when the head needs the exact scanner.
    """
    known = PATH_HEADS.get(head)
    if known is not None:
        head_fields, last_tail, merged = known
        if last_tail is not tail:
            merged = {**head_fields, **tail}
            PATH_HEADS[head] = (head_fields, tail, merged)
        return merged.copy()
    parsed = fields_fast(head)
    if parsed is None:
        return None
    merged = {**parsed, **tail}
    if len(PATH_HEADS) >= HEAD_CACHE_MAX:
        PATH_HEADS.clear()
    PATH_HEADS[head] = (parsed, tail, merged.copy())
    return merged


# Per tail, by identity (kept alive with it): the key sequence of the plain heads seen
# with it and a template of the fields, {head keys: "", **tail}; see merged_fields.
HEAD_TEMPLATES: dict[int, tuple[dict[str, str], list[str], dict[str, str]]] = {}
TEMPLATE_NAMES_MAX = 64  # a SYSCALL head names 11


def merged_fields(head: str, tail: dict[str, str]) -> dict[str, str] | None:
    """``{**fields_fast(head), **tail}``; None when the head needs the exact scanner.

    A SYSCALL's head (arch ... pid) is new every time but its names come in the same
    order: for a plain head (what _pairs splits at once) with names seen before with
    this tail, not encodable and not in the tail, a copy of the template gets the
    values (a quarter of the cost of building and merging the dict).
    """
    if not ('"' in head or "'" in head or "{" in head) and head[:1] == " " and head.isascii():
        separators = head.encode().translate(None, _NOT_SEPARATORS)
        if separators == b" =" * (len(separators) >> 1):
            words = head.replace(" ", "=").split("=")
            names = words[1::2]
            known = HEAD_TEMPLATES.get(id(tail))
            if known is None or known[0] is not tail or known[1] != names:
                known = _head_template(tail, names)
            if known is not None:
                fields = known[2].copy()
                fields.update(zip(known[1], words[2::2], strict=True))
                return fields
    head_fields = fields_fast(head)
    return None if head_fields is None else {**head_fields, **tail}


def _head_template(
    tail: dict[str, str], names: list[str]
) -> tuple[dict[str, str], list[str], dict[str, str]] | None:
    """Remember `names` (of a plain head) with `tail`, unless a value would not be the
    head's word as it is (an encodable name) or the tail would override it."""
    if len(names) > TEMPLATE_NAMES_MAX:  # a crafted head: no big template kept for it
        return None
    if not (_ENCODED_FIELDS.isdisjoint(names) and tail.keys().isdisjoint(names)):
        return None
    template = {**dict.fromkeys(names, ""), **tail}
    if len(HEAD_TEMPLATES) >= CACHE_MAX:
        HEAD_TEMPLATES.clear()
    known = HEAD_TEMPLATES[id(tail)] = (tail, names, template)
    return known
