"""Who did something, as the audit log names them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ActorType = Literal["user", "principal", "token", "system", "anonymous"]


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str

    @classmethod
    def system(cls, name: str = "keyward") -> Actor:
        return cls("system", name)

    @classmethod
    def anonymous(cls) -> Actor:
        return cls("anonymous", "")
