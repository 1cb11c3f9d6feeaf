"""A subtask: one LLM call of a batch, with what the estimators may know about it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, Any]


@dataclass(frozen=True)
class Subtask:
    """One call to fund: chat messages plus optional facts for the curve estimators.

    Attributes:
        messages: OpenAI-style chat messages (``{"role": ..., "content": ...}``), non-empty.
        kind: task kind (a chain/agent step name, a tag): subtasks of one kind share a curve.
        id: caller's identifier (default: the subtask's position in its batch).
        hint: a difficulty hint (a level, a tag, an expected length) for hint-aware estimators.
        metadata: anything else; passed to LiteLLM as request ``metadata``. It never reaches
            the ledger's statements.
    """

    messages: tuple[Message, ...]
    kind: str | None = None
    id: str | None = None
    hint: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("messages must hold at least one chat message")
        for i, message in enumerate(self.messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise ValueError(
                    f"messages[{i}] must be a mapping with a 'role' (and 'content'); "
                    f"got {message!r:.80}"
                )
        for name in ("kind", "id", "hint"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a str or None; got {value!r}")

    @classmethod
    def of(cls, value: str | Sequence[Message] | Subtask, **fields: Any) -> Subtask:
        """A subtask from a prompt string, a list of chat messages, or a ``Subtask``."""
        if isinstance(value, Subtask):
            return value if not fields else cls(**{**value.__dict__, **fields})
        if isinstance(value, str):
            return cls(({"role": "user", "content": value},), **fields)
        if isinstance(value, Sequence):
            return cls(tuple(dict(m) if isinstance(m, Mapping) else m for m in value), **fields)
        raise TypeError(
            f"a subtask is a prompt str, a list of chat messages or a Subtask; got "
            f"{type(value).__name__}"
        )

    @property
    def digest(self) -> str:
        """A stable id of the messages (SHA-256 of their JSON, 32 hex characters): estimators
        that predict per prompt (the probe) key their predictions by it; it never carries the
        text itself."""
        blob = json.dumps(self.message_list, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    @property
    def message_list(self) -> list[dict[str, Any]]:
        """The messages as fresh dicts, ready for a provider call."""
        return [dict(m) for m in self.messages]
