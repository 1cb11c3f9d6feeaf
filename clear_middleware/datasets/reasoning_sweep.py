"""The "Reasoning Budget Sweep" measurements: real runs of small reasoning LLMs under hard caps.

One row per (model, benchmark, cap, seed, item): the generated length in tokens, whether the run
was cut at its cap (``reached_cap``) and whether its answer was graded correct. A run that
finished would have had the same outcome under any larger cap; a run cut at its cap only tells
that its length exceeds the cap (a censored observation).

Source: "Reasoning Budget Sweep" v1.0.0 by Samir Hossain (Texas Tech University), data licensed
CC-BY-4.0, github.com/SamirHossain099/reasoning-budget-sweep, file
data/reasoning_budget_sweep.csv at commit 3792659c40db682423efbef70c81213140258b41. The bundled
copy (``clear_middleware/data/reasoning_budget_sweep.dev.csv.gz``) holds the rows of ten of its
twelve models, unchanged but for gzip compression.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

BUNDLED_SWEEP = "reasoning_budget_sweep.dev.csv.gz"
SWEEP_ATTRIBUTION = (
    'Data: "Reasoning Budget Sweep" v1.0.0 by Samir Hossain (Texas Tech University), CC-BY-4.0, '
    "github.com/SamirHossain099/reasoning-budget-sweep (commit 3792659c)."
)

_BOOL = {"True": True, "False": False, "true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class SweepTable:
    """Column arrays of the sweep, one entry per run.

    Attributes:
        model: model short name per run (e.g. ``"deepscaler-1.5b"``).
        benchmark: ``"aime24"``, ``"aime25"`` or ``"math500"`` per run (the task kind).
        item_id: item identifier within its benchmark.
        seed: sampling seed (0, 1, 2).
        cap: the run's ``max_new_tokens`` cap, in tokens.
        length: generated tokens (equal to ``cap`` when the run was cut).
        reached_cap: the run was cut at its cap (its true length is censored above ``cap``).
        correct: the answer was graded correct.
    """

    model: NDArray[np.str_]
    benchmark: NDArray[np.str_]
    item_id: NDArray[np.str_]
    seed: NDArray[np.int64]
    cap: NDArray[np.int64]
    length: NDArray[np.int64]
    reached_cap: NDArray[np.bool_]
    correct: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.cap.shape[0])

    def where(self, mask: NDArray[np.bool_]) -> SweepTable:
        """The runs selected by a boolean mask."""
        return SweepTable(**{name: getattr(self, name)[mask] for name in self.__dataclass_fields__})

    def for_model(self, model: str) -> SweepTable:
        """The runs of one model; raises ``KeyError`` naming the known models if it is absent."""
        mask = self.model == model
        if not mask.any():
            raise KeyError(f"model {model!r} is not in the sweep; known: {sorted(self.models())}")
        return self.where(mask)

    def models(self) -> list[str]:
        return sorted(set(self.model.tolist()))

    def caps_of(self, model: str) -> list[int]:
        """The distinct caps (tokens) a model was run under, ascending."""
        return sorted(set(self.cap[self.model == model].tolist()))

    def models_with_caps(self, at_least: int = 3) -> list[str]:
        """Models run under at least ``at_least`` distinct caps (enough to trace a curve)."""
        return [m for m in self.models() if len(self.caps_of(m)) >= at_least]


@dataclass(frozen=True)
class ItemRollouts:
    """The runs of each item of one model, padded into ``(n_items, max_runs)`` arrays.

    Attributes:
        item_id, benchmark: per item.
        length: generated tokens per run (padding: 0).
        correct: the run finished and was graded correct (padding: False). An answer found in
            a run cut at its cap is not counted: its outcome under a larger cap is unknown.
        censored: the run was cut at its cap, so its length is only a lower bound.
        cap: the cap (tokens) each run ran under (padding: 1).
        valid: False on padding.
    """

    item_id: NDArray[np.str_]
    benchmark: NDArray[np.str_]
    length: NDArray[np.float64]
    correct: NDArray[np.bool_]
    censored: NDArray[np.bool_]
    cap: NDArray[np.float64]
    valid: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.item_id.shape[0])

    @property
    def max_length(self) -> int:
        """The longest observed or censored run, in tokens."""
        return int(self.length[self.valid].max()) if self.valid.any() else 0


def sweep_rows(path: str | Path | None = None) -> Iterator[dict[str, str]]:
    """The sweep's CSV rows: the bundled copy by default, or a CSV (optionally ``.gz``)."""
    if path is None:
        raw = resources.files("clear_middleware").joinpath("data", BUNDLED_SWEEP).read_bytes()
        text = gzip.decompress(raw).decode("utf-8")
    else:
        data = Path(path).read_bytes()
        text = (gzip.decompress(data) if str(path).endswith(".gz") else data).decode("utf-8")
    return csv.DictReader(io.StringIO(text))


def load_sweep(path: str | Path | None = None) -> SweepTable:
    """Load the sweep: the bundled copy by default, or a CSV (optionally ``.gz``) at ``path``."""
    return _parse(sweep_rows(path))


def _parse(rows: Iterable[dict[str, str]]) -> SweepTable:
    cols: dict[str, list[str]] = {}
    for row in rows:
        for key, value in row.items():
            cols.setdefault(key, []).append(value)
    required = ("model", "benchmark", "item_id", "seed", "budget", "n_new_tokens", "reached_cap")
    missing = [c for c in (*required, "correct") if c not in cols]
    if missing:
        raise ValueError(f"sweep CSV lacks columns {missing}")
    return SweepTable(
        model=np.array(cols["model"]),
        benchmark=np.array(cols["benchmark"]),
        item_id=np.array(cols["item_id"]),
        seed=np.array(cols["seed"], dtype=np.int64),
        cap=np.array(cols["budget"], dtype=np.int64),
        length=np.array(cols["n_new_tokens"], dtype=np.int64),
        reached_cap=np.array([_BOOL[v] for v in cols["reached_cap"]], dtype=bool),
        correct=np.array([_BOOL[v] for v in cols["correct"]], dtype=bool),
    )


def item_rollouts(table: SweepTable, model: str) -> ItemRollouts:
    """Group one model's runs by item (sorted by benchmark, then item id)."""
    runs = table.for_model(model)
    keys = np.char.add(np.char.add(runs.benchmark, "\x00"), runs.item_id)
    unique_keys, item_index = np.unique(keys, return_inverse=True)
    n_items = unique_keys.shape[0]
    counts = np.bincount(item_index, minlength=n_items)
    width = int(counts.max())
    order = np.argsort(item_index, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(order.shape[0]) - np.repeat(starts, counts)
    rows, cols = item_index[order], slot

    def padded(values: NDArray, fill: float | bool, dtype: type) -> NDArray:
        out = np.full((n_items, width), fill, dtype=dtype)
        out[rows, cols] = values[order]
        return out

    first = order[starts]
    return ItemRollouts(
        item_id=runs.item_id[first],
        benchmark=runs.benchmark[first],
        length=padded(runs.length, 0.0, np.float64),
        correct=padded(runs.correct & ~runs.reached_cap, False, bool),
        censored=padded(runs.reached_cap, False, bool),
        cap=padded(runs.cap, 1.0, np.float64),
        valid=padded(np.ones(len(runs), dtype=bool), False, bool),
    )


BUNDLED_MATH500 = "math500_items.jsonl.gz"


@dataclass(frozen=True)
class Math500Item:
    """One MATH-500 problem: its id (the sweep's ``item_id``), subject, level 1-5, text."""

    unique_id: str
    subject: str
    level: int
    problem: str
    answer: str


def load_math500() -> dict[str, Math500Item]:
    """The bundled MATH-500 problems by ``unique_id`` (MIT License; see the data README)."""
    import json

    raw = resources.files("clear_middleware").joinpath("data", BUNDLED_MATH500).read_bytes()
    items = {}
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items[row["unique_id"]] = Math500Item(row["unique_id"], row["subject"],
                                                  int(row["level"]), row["problem"],
                                                  row["answer"])
    return items
