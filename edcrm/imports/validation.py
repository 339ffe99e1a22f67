"""Validating and normalising one CSV row into a lead's values, or the reasons it cannot be one.

Phones become E.164 with `phonenumbers` (default region IN). An Indian number must be a mobile: a
landline-shaped number is rejected, since telecallers call mobiles. Numbers of other countries pass when
valid. Emails are checked for syntax only (the WHATWG "valid e-mail address", with a dot in the domain).

Speed: phonenumbers.parse costs ~20 µs, most of a million-row import. The common shapes of an Indian
mobile (`9876543210`, `+91 98765 43210`, `09876-543210`, `919876543210`) take a fast path that checks
the digits against phonenumbers' own metadata pattern for Indian mobiles; anything else goes through
phonenumbers in full. tests/imports/test_import_validation.py checks that both paths always agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from .headers import LABELS, ColumnMap

DEFAULT_REGION = "IN"
INDIA_CODE = 91
MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})

#: Column sizes of the Lead model (edcrm/models/lead.py).
MAX_LENGTHS = {
    "student_name": 200,
    "email": 254,
    "course": 200,
    "university": 200,
    "city": 120,
    "source": 120,
}
#: Optional free-text fields, in the order of LeadValues.
TEXT_FIELDS = ("course", "university", "city", "source")

# WHATWG HTML "valid e-mail address", but with at least one dot in the domain: a lead's `a@b` is a typo.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
EMAIL = re.compile(rf"[a-zA-Z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+")

_SEPARATORS = str.maketrans("", "", " -().")
# An Indian number in one of its usual shapes: +91, 0091, 91 or the trunk 0, then ten digits.
_INDIAN_SHAPE = re.compile(r"(?:\+91|0091|91|0)?([6-9][0-9]{9})")
_INDIA = PhoneMetadata.metadata_for_region(DEFAULT_REGION)
_MOBILE_PATTERN = _INDIA.mobile.national_number_pattern if _INDIA and _INDIA.mobile else None
assert _MOBILE_PATTERN is not None  # phonenumbers ships India's metadata
_INDIAN_MOBILE = re.compile(_MOBILE_PATTERN)


class LeadValues(NamedTuple):
    student_name: str
    phone_number: str
    email: str | None
    alternate_phone: str | None
    course: str | None
    university: str | None
    city: str | None
    source: str | None


class InvalidPhone(ValueError):
    pass


def normalise_phone(raw: str) -> str:
    """raw as E.164, or InvalidPhone saying why (not a number, not valid, an Indian landline)."""
    fast = _fast_indian_mobile(raw)
    if fast is not None:
        return fast
    return normalise_phone_fully(raw)


def _fast_indian_mobile(raw: str) -> str | None:
    """E.164 of raw when it is an Indian mobile in a usual shape; None means "ask phonenumbers"."""
    match = _INDIAN_SHAPE.fullmatch(raw.translate(_SEPARATORS))
    if match is None:
        return None
    national = match.group(1)
    if _INDIAN_MOBILE.fullmatch(national) is None:
        return None  # phonenumbers says why it is not one
    return "+91" + national


def normalise_phone_fully(raw: str) -> str:
    """normalise_phone through phonenumbers alone (the reference the fast path is tested against)."""
    try:
        number = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise InvalidPhone("is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("is not a valid phone number")
    if number.country_code == INDIA_CODE and phonenumbers.number_type(number) not in MOBILE_TYPES:
        raise InvalidPhone("is not a mobile number (Indian numbers must be mobiles)")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def is_valid_email(email: str) -> bool:
    return len(email) <= MAX_LENGTHS["email"] and EMAIL.fullmatch(email) is not None


class RowValidator:
    """Turns rows of one file (whose columns are mapped) into LeadValues, or a list of reasons."""

    def __init__(self, columns: ColumnMap):
        fields = ("student_name", "phone_number", "email", "alternate_phone", *TEXT_FIELDS)
        indexes = [columns.index(field) for field in fields]  # None: the file has no such column
        # A row short of a column used is padded with empty cells to this width.
        self.width = max((index for index in indexes if index is not None), default=-1) + 1
        self.name_index, self.phone_index, self.email_index, self.alternate_index = indexes[:4]
        self.text_indexes = indexes[4:]
        self.text_limits = [(MAX_LENGTHS[field], LABELS[field]) for field in TEXT_FIELDS]
        self.shortest_text_limit = min(limit for limit, _ in self.text_limits)

    def validate(self, cells: Sequence[str]) -> LeadValues | list[str]:
        # The row's cells by index, without a check per cell (this runs once per row of every import):
        # a row short of a column is padded with empty cells first.
        if len(cells) < self.width:
            cells = [*cells, *[""] * (self.width - len(cells))]
        reasons: list[str] = []

        name = _cell(cells, self.name_index)
        if not name:
            reasons.append("name is missing")
        elif len(name) > MAX_LENGTHS["student_name"]:
            reasons.append(f"name is longer than {MAX_LENGTHS['student_name']} characters")

        phone = _cell(cells, self.phone_index)
        if not phone:
            reasons.append("phone is missing")
        else:
            try:
                phone = normalise_phone(phone)
            except InvalidPhone as error:
                reasons.append(f"phone {phone!r} {error}")

        email = _cell(cells, self.email_index) or None
        if email is not None and not is_valid_email(email):
            reasons.append(f"email {email!r} is not a valid email address")

        alternate = _cell(cells, self.alternate_index) or None
        if alternate is not None:
            try:
                alternate = normalise_phone(alternate)
            except InvalidPhone as error:
                reasons.append(f"{LABELS['alternate_phone']} {alternate!r} {error}")

        texts = [cells[index].strip() if index is not None else "" for index in self.text_indexes]
        if max(map(len, texts)) > self.shortest_text_limit:
            for text, (limit, label) in zip(texts, self.text_limits, strict=True):
                if len(text) > limit:
                    reasons.append(f"{label} is longer than {limit} characters")

        if reasons:
            return reasons
        return LeadValues(name, phone, email, alternate, *[text or None for text in texts])


def _cell(cells: Sequence[str], index: int | None) -> str:
    return cells[index].strip() if index is not None else ""
