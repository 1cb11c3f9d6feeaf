"""Invariants shared by the ledger tests."""

from __future__ import annotations

from clear_middleware.ledger import Balance, StatementEntry


def totals(entries: list[StatementEntry]) -> tuple[int, int, int, int]:
    """(spent tokens, spent nano-USD, reserved tokens, reserved nano-USD) rebuilt from entries."""
    spent_t = spent_n = reserved_t = reserved_n = 0
    for entry in entries:
        if entry.kind == "reserve":
            reserved_t += entry.reserved_tokens
            reserved_n += entry.reserved_nano_usd
        elif entry.kind in ("commit", "release", "expire"):
            reserved_t -= entry.reserved_tokens
            reserved_n -= entry.reserved_nano_usd
            if entry.kind == "commit":
                spent_t += entry.tokens
                spent_n += entry.nano_usd
    return spent_t, spent_n, reserved_t, reserved_n


def assert_statement_matches(balance: Balance, entries: list[StatementEntry]) -> None:
    """The statement (with sub-sessions) adds up to the store's counters exactly."""
    assert totals(entries) == (
        balance.spent_tokens, balance.spent_nano_usd,
        balance.reserved_tokens, balance.reserved_nano_usd,
    )


def assert_never_over(entries: list[StatementEntry], cap_tokens: int) -> int:
    """Replay the statement in store order: committed + reserved never exceeds the cap.

    ``seq`` is assigned inside each atomic step, so this order is the order the store applied
    the operations in. Over-reservation commits are excluded by the callers. Returns the peak.
    """
    spent = reserved = peak = 0
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    for entry in entries:
        if entry.kind == "reserve":
            reserved += entry.reserved_tokens
        elif entry.kind in ("commit", "release", "expire"):
            reserved -= entry.reserved_tokens
            spent += entry.tokens if entry.kind == "commit" else 0
        assert spent + reserved <= cap_tokens, (entry, spent, reserved)
        peak = max(peak, spent + reserved)
    return peak
