"""Strict defconfig loading and config.py generation, on top of kconfiglib.

kconfiglib applies a defconfig leniently: an out-of-range int silently falls
back to the default (the seed project's CONFIG_BATCH_SIZE=16 became 32), and
unknown symbols or assignments with unmet dependencies are dropped with at
most a warning. Here every line of a defconfig must take effect, or loading
fails with one message per bad line saying what happened and what to do.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import kconfiglib

from lib.errors import Refusal
from lib.io import atomic_write_text

# Seed-project spellings that name a symbol of ours. The left side never
# appears in our Kconfig; a defconfig line using it is applied to the right.
RENAMED_SYMBOLS = {
    "COMPILE_MODEL": "GPT2_COMPILE",
    "GPT2_DATASET": "GPT2_DATASET_NAME",
}

_ASSIGN_RE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_STRING_RE = re.compile(r'^"((?:[^"\\]|\\.)*)"$')
_BOOL_VALUES = {"y": 2, "n": 0}


# The project's Kconfig tree, for code that needs it beside a config.py (--set of a choice entry).
KCONFIG = Path(__file__).resolve().parents[2] / "Kconfig"


class DefconfigError(Refusal, ValueError):
    """A defconfig (or .config) that did not apply exactly as written."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One `CONFIG_X=value` (or `# CONFIG_X is not set`) line of a config file."""

    path: str
    lineno: int
    name: str
    raw: str
    """The value as written, quotes included."""
    value: str
    """The value kconfiglib should end up with (unquoted, unescaped)."""

    def where(self) -> str:
        return f"{self.path} {self.lineno}" if self.path == "--set" else f"{self.path}:{self.lineno}"


def parse_config_lines(path: str | os.PathLike, text: str) -> list[Assignment]:
    """Parse defconfig text into assignments; reject lines that are not Kconfig syntax."""
    errors, out = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if (m := _UNSET_RE.match(stripped)) is not None:
            out.append(Assignment(str(path), lineno, m[1], "n", "n"))
        elif stripped == "" or stripped.startswith("#"):
            continue
        elif (m := _ASSIGN_RE.match(stripped)) is not None:
            raw = m[2]
            if (s := _STRING_RE.match(raw)) is not None:
                value = re.sub(r"\\(.)", r"\1", s[1])
            else:
                value = raw
            out.append(Assignment(str(path), lineno, m[1], raw, value))
        else:
            errors.append(
                f"{path}:{lineno}: not a Kconfig assignment: {line!r}. Lines must read "
                "CONFIG_NAME=value or '# CONFIG_NAME is not set' (or be a # comment)."
            )
    if errors:
        raise DefconfigError("\n".join(errors))
    return out


def load_kconfig(kconfig: str | os.PathLike = "Kconfig") -> kconfiglib.Kconfig:
    """Parse the Kconfig tree quietly (sources are relative to its folder)."""
    kconfig = Path(kconfig).resolve()
    old = os.environ.get("srctree")
    os.environ["srctree"] = str(kconfig.parent)
    try:
        return kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    finally:
        if old is None:
            os.environ.pop("srctree", None)
        else:
            os.environ["srctree"] = old


def _has_prompt(sym: kconfiglib.Symbol) -> bool:
    return any(node.prompt for node in sym.nodes)


def _choice_entries(cond) -> list[kconfiglib.Symbol]:
    """The choice entries a default's condition requires: ENTRY, or ENTRY && <the enclosing `if`>."""
    if isinstance(cond, kconfiglib.Symbol):
        return [cond] if cond.choice is not None else []
    if isinstance(cond, tuple) and cond[0] == kconfiglib.AND:
        return _choice_entries(cond[1]) + _choice_entries(cond[2])
    return []


def _choice_entry_for(sym: kconfiglib.Symbol, value: str) -> kconfiglib.Symbol | None:
    """For a promptless string derived from a choice (`default "x" if ENTRY`), the entry giving `value`."""
    for default, cond in sym.defaults:
        if isinstance(default, kconfiglib.Symbol) and default.str_value == value:
            if entries := _choice_entries(cond):
                return entries[0]
    return None


def _derived_values(sym: kconfiglib.Symbol) -> list[str]:
    return [d.str_value for d, _ in sym.defaults if isinstance(d, kconfiglib.Symbol)]


def _active_range(sym: kconfiglib.Symbol) -> tuple[int, int] | None:
    base = 16 if sym.orig_type is kconfiglib.HEX else 10
    for low, high, cond in sym.ranges:
        if kconfiglib.expr_value(cond):
            return int(low.str_value, base), int(high.str_value, base)
    return None


def _valid_for_type(sym: kconfiglib.Symbol, a: Assignment) -> str | None:
    """None if `a.value` is well-formed for the symbol's type, else why not."""
    t = sym.orig_type
    if t in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return None if a.value in _BOOL_VALUES else f"{a.raw!r} is not y or n"
    if t is kconfiglib.INT:
        return None if re.fullmatch(r"-?\d+", a.value) else f"{a.raw!r} is not an integer"
    if t is kconfiglib.HEX:
        return None if re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", a.value) else f"{a.raw!r} is not hex"
    if t is kconfiglib.STRING:
        return None if _STRING_RE.match(a.raw) else f'{a.raw} is not a quoted string ("...")'
    return f"symbol of unsupported type {kconfiglib.TYPE_TO_STR[t]}"


def _applied(sym: kconfiglib.Symbol) -> str:
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return kconfiglib.TRI_TO_STR[sym.tri_value]
    return sym.str_value


def _reason(kconf: kconfiglib.Kconfig, sym: kconfiglib.Symbol, a: Assignment, by_name: dict) -> str:
    """Why `a` did not take effect, and what to do about it."""
    if sym.orig_type is kconfiglib.INT and (rng := _active_range(sym)) is not None:
        if not rng[0] <= int(a.value) <= rng[1]:
            return (
                f"out of range: allowed {rng[0]}..{rng[1]}. Pick a value in range, "
                "or widen the symbol's `range` in Kconfig if the limit is wrong"
            )
    if sym.choice is not None:
        chosen = sym.choice.selection
        if a.value == "y" and chosen is not sym and chosen is not None and chosen.name in by_name:
            other = by_name[chosen.name]
            return (
                f"choice: CONFIG_{chosen.name} at {other.where()} selects another entry of "
                f"the same choice ({sym.choice.nodes[0].prompt[0]!r}); keep one of the two lines"
            )
        if a.value == "n":
            return (
                "choice: an entry cannot be switched off on its own; set the entry you want "
                "(CONFIG_<ENTRY>=y) and drop this line"
            )
    if sym.visibility == 0 and _has_prompt(sym):
        dep = kconfiglib.expr_str(sym.direct_dep)
        if sym.choice is not None:  # kconfiglib writes the choice as "<choice>": say what it needs
            choice = f"the choice {sym.choice.nodes[0].prompt[0]!r}"
            needs = kconfiglib.expr_str(sym.choice.direct_dep)
            if sym.direct_dep is sym.choice:
                dep = f"{needs} (for {choice})"
            else:
                dep = dep.replace("<choice>", f"{choice} (itself on {needs})")
        return (
            f"unmet dependency: it depends on {dep}, which is not met. Enable that first "
            "(in this file or with make menuconfig), or drop the line"
        )
    if not _has_prompt(sym):
        return "it has no prompt and cannot be set; it is derived from other options"
    return (
        "overridden by another option (a `select` or a dependency); see the symbol's "
        "entry in make menuconfig (press ? on it)"
    )


def apply_config(kconf: kconfiglib.Kconfig, path: str | os.PathLike) -> None:
    """Load `path` into `kconf`, raising DefconfigError unless every line took effect exactly."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DefconfigError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DefconfigError(f"{path} is not UTF-8 text (byte {e.start}); is it a defconfig?") from None
    kconf.unset_values()
    apply_assignments(kconf, parse_config_lines(path, text), f"{path} did not load exactly as written")


def apply_assignments(kconf: kconfiglib.Kconfig, assignments: list[Assignment], failure: str) -> None:
    """Set each assignment over `kconf`'s current values; DefconfigError (headed `failure`) unless
    every one took effect exactly, with the reason and the fix for each that did not."""
    errors: list[tuple[int, str]] = []
    seen: dict[str, Assignment] = {}
    to_check: list[tuple[Assignment, kconfiglib.Symbol, str]] = []
    for a in assignments:
        name = RENAMED_SYMBOLS.get(a.name, a.name)
        line = f"{a.where()}: CONFIG_{a.name}={a.raw}"
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            known = [s.name for s in kconf.unique_defined_syms]
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join('CONFIG_' + c for c in close)}?" if close else ""
            errors.append(
                (
                    a.lineno,
                    f"{line}: unknown symbol: no option of that name in Kconfig.{hint}",
                )
            )
            continue
        if name in seen:
            prev = seen[name]
            if a.name != prev.name and a.value == prev.value:
                continue  # two spellings of one symbol (COMPILE_MODEL and GPT2_COMPILE) that agree
            what = (
                f"also set by its other spelling CONFIG_{prev.name} to {prev.raw} at {prev.where()}"
                if a.name != prev.name
                else f"set more than once (also at {prev.where()}); keep one line"
            )
            errors.append((a.lineno, f"{line}: {what}"))
            continue
        seen[name] = a
        if (problem := _valid_for_type(sym, a)) is not None:
            if "#" in a.raw and not a.raw.startswith('"'):
                problem += " (a trailing # comment is not Kconfig syntax: put it on a line of its own)"
            errors.append((a.lineno, f"{line}: invalid value: {problem}"))
            continue
        target, value = sym, a.value
        if not _has_prompt(sym) and sym.orig_type is kconfiglib.STRING:
            entry = _choice_entry_for(sym, a.value)
            if entry is None:
                allowed = ", ".join(f'"{v}"' for v in _derived_values(sym))
                errors.append((a.lineno, f"{line}: invalid value: allowed {allowed}"))
                continue
            target, value = entry, "y"
        to_check.append((a, sym, a.value))
        if target is not sym:
            seen.setdefault(target.name, a)
        target.set_value(_BOOL_VALUES[value] if target.orig_type is kconfiglib.BOOL else value)

    for a, sym, wanted in to_check:
        applied = _applied(sym)
        if applied != wanted:
            line = f"{a.where()}: CONFIG_{a.name}={a.raw}"
            errors.append(
                (
                    a.lineno,
                    f"{line}: did not take effect (applied: {applied!r}): {_reason(kconf, sym, a, seen)}",
                )
            )
    if errors:
        raise DefconfigError(f"{failure}:\n  " + "\n  ".join(msg for _, msg in sorted(errors)))


def set_values(kconf: kconfiglib.Kconfig, values: dict[str, bool | int | str]) -> None:
    """Give `kconf` the values of a config.py dict (as config_values returns), without checks: each
    symbol with a prompt takes its value, then each derived string selects the choice entry giving
    it (so a changed derived string, an --optimizer flag's, wins over its old entry)."""
    kconf.unset_values()
    derived = []
    for name, value in values.items():
        sym = kconf.syms.get(RENAMED_SYMBOLS.get(name, name))
        if sym is None or not sym.nodes:
            continue
        if not _has_prompt(sym):
            derived.append((sym, str(value)))
        elif sym.orig_type is kconfiglib.BOOL:
            if value or sym.choice is None:  # a choice's entries are set by the one chosen
                sym.set_value(2 if value else 0)
        elif sym.orig_type is kconfiglib.HEX and isinstance(value, int):
            sym.set_value(hex(value))
        else:
            sym.set_value(str(value))
    for sym, value in derived:
        if sym.orig_type is kconfiglib.STRING and (entry := _choice_entry_for(sym, value)) is not None:
            entry.set_value(2)


def kconfig_symbol(name: str, *, choice_entry: bool = False) -> bool:
    """Whether `name` (CONFIG_ optional) is a symbol of the project's Kconfig (with choice_entry:
    an entry of a choice, whose setting moves the choice and what derives from it)."""
    name = name.removeprefix("CONFIG_")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        return False
    sym = _project_kconfig().syms.get(RENAMED_SYMBOLS.get(name, name))
    return sym is not None and bool(sym.nodes) and (not choice_entry or sym.choice is not None)


@functools.cache
def _project_kconfig() -> kconfiglib.Kconfig:
    """The project's Kconfig tree, parsed once, for look-ups only (never given values)."""
    return load_kconfig(KCONFIG)


def out_of_range(values: dict) -> dict[str, str]:
    """The int symbols among `values` (symbol -> value) whose value lies outside their Kconfig
    range: symbol -> the range allowed, as "1..4096". Kconfig holds every range; config.py edited by
    hand and command-line flags are checked against it as a defconfig line would be."""
    kconf = _project_kconfig()
    bad = {}
    for name, value in values.items():
        sym = kconf.syms.get(name)
        if sym is None or sym.orig_type not in (kconfiglib.INT, kconfiglib.HEX):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        base = 16 if sym.orig_type is kconfiglib.HEX else 10
        for low, high, cond in sym.ranges:
            if kconfiglib.expr_value(cond):
                lo, hi = int(low.str_value, base), int(high.str_value, base)
                if not lo <= value <= hi:
                    bad[name] = f"{lo}..{hi}"
                break
    return bad


def kconfig_line(kconf: kconfiglib.Kconfig, text: str, where: str, lineno: int) -> Assignment:
    """A `SYMBOL=VALUE` from the command line as a defconfig line (CONFIG_ optional; a string
    symbol's value may be given without its quotes)."""
    name, _, raw = text.partition("=")
    name = name.strip().removeprefix("CONFIG_")
    raw = raw.strip()
    sym = kconf.syms.get(RENAMED_SYMBOLS.get(name, name))
    if sym is not None and sym.orig_type is kconfiglib.STRING and not raw.startswith('"'):
        raw = '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'
    (a,) = parse_config_lines(where, f"CONFIG_{name}={raw}")
    return Assignment(where, lineno, a.name, a.raw, a.value)


def config_with_lines(
    config: dict[str, bool | int | str], lines: list[str], kconfig: str | os.PathLike | None = None
) -> dict[str, bool | int | str | None]:
    """`config` (config.py's dict) with `lines` (SYMBOL=VALUE) applied as a defconfig applies them,
    as strictly: every line takes effect or DefconfigError says why. Returns the symbols whose values
    changed (a choice entry changes the string derived from it), None for one no longer written.
    """
    kconf = load_kconfig(kconfig or KCONFIG)
    set_values(kconf, config)
    before = config_values(kconf)
    assignments = [kconfig_line(kconf, text, "--set", i) for i, text in enumerate(lines, 1)]
    apply_assignments(kconf, assignments, "--set did not take effect as written")
    after = config_values(kconf)
    gone = {k: None for k in before if k not in after}  # no longer written: the setting's default
    return {**{k: v for k, v in after.items() if before.get(k) != v}, **gone}


def config_values(kconf: kconfiglib.Kconfig) -> dict[str, bool | int | str]:
    """The values .config would hold, typed: bools as bool, ints as int, strings as str."""
    values: dict[str, bool | int | str] = {}
    for sym in kconf.unique_defined_syms:
        if not sym.config_string:
            continue
        t = sym.orig_type
        if t in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            values[sym.name] = sym.tri_value == 2
        elif t is kconfiglib.INT:
            values[sym.name] = int(sym.str_value)
        elif t is kconfiglib.HEX:
            values[sym.name] = int(sym.str_value, 16)
        else:
            values[sym.name] = sym.str_value
    return values


def render_config_py(values: dict[str, bool | int | str], source: str, digest: str) -> str:
    """config.py text: a header and one dict literal. repr() makes every value inert data."""
    lines = [
        "# Generated by scripts/kconfig.py; do not edit (make menuconfig, then make).",
        f"# Source: {source!r} (sha256 {digest})",
        "# Pure data: lib/config/load.py reads it with ast.literal_eval, never imports it.",
        "CONFIG = {",
    ]
    lines += [f"    {name!r}: {value!r}," for name, value in sorted(values.items())]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_outputs(kconf: kconfiglib.Kconfig, dot_config: Path, config_py: Path | None) -> None:
    """Write .config (kconfiglib's format) and config.py, each atomically."""
    tmp = dot_config.with_name(dot_config.name + ".tmp")
    kconf.write_config(str(tmp), save_old=False)
    os.replace(tmp, dot_config)
    if config_py is not None:
        digest = hashlib.sha256(dot_config.read_bytes()).hexdigest()
        text = render_config_py(config_values(kconf), str(dot_config), digest)
        atomic_write_text(config_py, text)
