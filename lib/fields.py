"""Field metadata and checks shared by every settings dataclass.

A settings field says which Kconfig symbol (and CLI flag) sets it; a failed
check names the field, the value, what is allowed and that symbol or flag.
"""

from dataclasses import fields
from typing import Any

from lib.errors import Refusal


class SettingsError(Refusal, ValueError):
    """A setting outside what is allowed; the message says how to fix it."""


def kc(
    symbol: str, flag: str | None = None, *, aliases: tuple[str, ...] = (), resumable: bool = False
) -> dict:
    """Field metadata: the Kconfig symbol (without CONFIG_), the optional CLI flag (and the older
    flags it still answers to), and whether a resumed run may change the setting (True only where
    it changes nothing the run computes: how long it runs, how it reports, what it measures beside
    training, where records go)."""
    meta: dict = {"kconfig": symbol, "resumable": resumable}
    if flag is not None:
        meta["flag"] = flag
    if aliases:
        meta["aliases"] = aliases
    return meta


def section_of(obj: Any) -> str:
    """'training' for a TrainingSettings instance."""
    return type(obj).__name__.removesuffix("Settings").lower()


def check(obj: Any, name: str, ok: bool, allowed: str) -> None:
    """Raise SettingsError for field `name` of `obj` unless `ok`."""
    if ok:
        return
    meta = {f.name: f.metadata for f in fields(obj)}[name]
    how = f"CONFIG_{meta['kconfig']} (make menuconfig)"
    if "flag" in meta:
        how += f" or {meta['flag']} on the command line"
    value = getattr(obj, name)
    raise SettingsError(
        f"{section_of(obj)}.{name} = {value!r} is not allowed; expected {allowed}. Set by {how}."
    )
