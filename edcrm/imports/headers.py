"""Matching a CSV's header cells to lead fields, with the contract's aliases.

Headers match whatever their case and spacing: `Student Name`, ` student_name ` and `STUDENTNAME` are
all the name column (spaces and underscores are ignored along with case).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Lead field -> the header names that fill it, as the contract lists them.
ALIASES: dict[str, tuple[str, ...]] = {
    "student_name": ("name", "student_name", "student name", "full name"),
    "phone_number": ("phone", "phone_number", "phone number", "mobile"),
    "email": ("email",),
    "alternate_phone": ("alternate_phone",),
    "course": ("course", "preferred_course"),
    "university": ("university", "preferred_university"),
    "city": ("city",),
    "source": ("source",),
}
REQUIRED = ("student_name", "phone_number")
#: How the error messages name a field: by its first alias.
LABELS = {field: aliases[0] for field, aliases in ALIASES.items()}

_IGNORED = re.compile(r"[\s_\ufeff]+")


def header_key(cell: str) -> str:
    """The form a header is compared in: lower case, without spaces, underscores or a stray BOM."""
    return _IGNORED.sub("", cell).lower()


_FIELD_BY_KEY = {header_key(alias): field for field, aliases in ALIASES.items() for alias in aliases}


class MissingColumns(ValueError):
    """The header lacks a required column; the message names it and the headers that were found."""


@dataclass(frozen=True)
class ColumnMap:
    """Where each lead field is in a row: field -> index of its column (absent fields are left out)."""

    indexes: dict[str, int]
    width: int

    def index(self, field: str) -> int | None:
        return self.indexes.get(field)


def map_columns(header: Sequence[str]) -> ColumnMap:
    """The columns of header that fill lead fields (the first one wins when two name the same field);
    MissingColumns when name or phone has no column."""
    indexes: dict[str, int] = {}
    for position, cell in enumerate(header):
        field = _FIELD_BY_KEY.get(header_key(cell))
        if field is not None and field not in indexes:
            indexes[field] = position
    missing = [field for field in REQUIRED if field not in indexes]
    if missing:
        raise MissingColumns(_missing_message(missing, header))
    return ColumnMap(indexes, len(header))


def _missing_message(missing: list[str], header: Sequence[str]) -> str:
    parts = [
        f"{LABELS[field]} (a column headed {', '.join(repr(a) for a in ALIASES[field])})" for field in missing
    ]
    found = ", ".join(repr(cell) for cell in header if cell.strip()) or "none"
    noun = "column" if len(missing) == 1 else "columns"
    return f"The file has no required {noun} {' and '.join(parts)}. Headers found: {found}."
