"""Pruning: which weights are zeroed, when, and how they are chosen.

PRUNERS maps a method name (the lower-cased Kconfig choice) to its builder.
Dense training ("none") builds no pruner at all.
"""

from dataclasses import dataclass, field

from lib.validate import check, kc

PRUNERS: dict[str, object] = {"none": None}


@dataclass(frozen=True, kw_only=True, slots=True)
class PruningSettings:
    """The pruning method of a run."""

    method: str = field(default="none", metadata=kc("PRUNING_METHOD", "--pruning-method"))
    """A key of PRUNERS."""

    def __post_init__(self) -> None:
        check(self, "method", self.method in PRUNERS, f"one of {', '.join(PRUNERS)}")
