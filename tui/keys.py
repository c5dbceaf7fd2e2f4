"""Describe key bindings for the help screen and the command palette.

Both are generated from the same BINDINGS the app uses, so they stay true
when keys change or are remapped through the keymap.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass
class KeyEntry:
    keys: str
    action: str
    description: str
    tooltip: str
    binding_id: str | None


@dataclass
class KeySection:
    title: str
    entries: list[KeyEntry]


def _format_keys(keys: str) -> str:
    names = []
    for key in keys.split(","):
        key = key.strip()
        parts = key.split("+")
        names.append("+".join(p.capitalize() if len(p) > 1 else p for p in parts))
    return " / ".join(names)


def describe(title: str, bindings: list, keymap: dict[str, str] | None = None) -> KeySection:
    """Turn a BINDINGS list into a help section (bindings without a description are skipped)."""
    entries: list[KeyEntry] = []
    for item in bindings:
        binding = item if isinstance(item, Binding) else Binding(*item)
        if not binding.description:
            continue
        keys = binding.key
        if keymap and binding.id and binding.id in keymap:
            keys = keymap[binding.id]
        entries.append(
            KeyEntry(
                keys=_format_keys(keys),
                action=binding.action,
                description=binding.description,
                tooltip=binding.tooltip,
                binding_id=binding.id,
            )
        )
    return KeySection(title, entries)
