"""A separate process that uses the ledger, for the multi-process and crash tests.

    python _worker.py run  URI OPTIONS_JSON SESSION PREFIX N SEED BARRIER_DIR WORKERS
        N reserve -> commit (or release) cycles once WORKERS workers are ready (a file each in
        BARRIER_DIR); prints a JSON summary.
    python _worker.py hold URI OPTIONS_JSON SESSION CALL TOKENS LEASE_SECONDS
        reserves once, prints "reserved", then sleeps until killed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from clear_middleware.ledger import Amount, BudgetExceeded, Ledger, store_from_uri


def wait_for_all(barrier: Path, prefix: str, workers: int) -> None:
    """Start together: however slowly each interpreter came up, all begin at once."""
    (barrier / f"{prefix}.ready").touch()
    deadline = time.time() + 120
    while len(list(barrier.glob("*.ready"))) < workers:
        if time.time() > deadline:
            raise SystemExit("the other workers never became ready")
        time.sleep(0.005)


def run(ledger: Ledger, session: str, prefix: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    reserved = refused = committed_tokens = 0
    for i in range(n):
        call = f"{prefix}-{i}"
        tokens = rng.randint(50, 150)
        try:
            ledger.reserve(session, call, Amount(tokens, tokens * 1e-6))
        except BudgetExceeded:
            refused += 1
            continue
        reserved += 1
        if rng.random() < 0.1:
            ledger.release(session, call)
        else:
            used = rng.randint(1, tokens)
            ledger.commit(session, call, Amount(used, used * 1e-6))
            committed_tokens += used
    print(json.dumps({"reserved": reserved, "refused": refused,
                      "committed_tokens": committed_tokens}), flush=True)


def main() -> None:
    mode, uri, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ledger = Ledger(store_from_uri(uri, **options))
    if mode == "run":
        session, prefix, n, seed, barrier, workers = sys.argv[4:10]
        wait_for_all(Path(barrier), prefix, int(workers))
        run(ledger, session, prefix, int(n), int(seed))
    elif mode == "hold":
        session, call, tokens, lease = sys.argv[4:8]
        ledger.reserve(session, call, Amount(int(tokens)), lease_seconds=float(lease))
        print("reserved", flush=True)
        time.sleep(600)  # the test SIGKILLs us long before this
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
