"""Row validation: phones to E.164 (Indian numbers must be mobiles), emails, lengths; the fast path for
Indian mobiles always agrees with phonenumbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edcrm.imports.headers import map_columns
from edcrm.imports.validation import (
    InvalidPhone,
    LeadValues,
    RowValidator,
    is_valid_email,
    normalise_phone,
    normalise_phone_fully,
)


@pytest.mark.parametrize(
    "raw",
    ["9847012301", "+91 98470 12301", "+91-98470-12301", "098470 12301", "919847012301", "0091 9847012301",
     "(+91) 98470-12301", "98470.12301", "+91 (984) 701-2301", " 9847012301 ", "+91\u00a09847012301"],
)  # fmt: skip
def test_indian_mobiles_in_their_usual_shapes(raw):
    assert normalise_phone(raw.strip()) == "+919847012301"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0484 2345678", "is not a mobile number (Indian numbers must be mobiles)"),  # a Kochi landline
        ("2223456789", "is not a mobile number"),  # 10 digits, landline-shaped
        ("1800 123 4567", "is not a mobile number"),  # toll free
        ("12345", "is not a valid phone number"),
        ("98470123", "is not a valid phone number"),
        ("98470123011", "is not a valid phone number"),
        ("5847012301", "is not a valid phone number"),
        ("abc", "is not a phone number"),
        ("+", "is not a phone number"),
    ],
)
def test_numbers_that_are_refused(raw, reason):
    with pytest.raises(InvalidPhone, match=reason.replace("(", r"\(").replace(")", r"\)")):
        normalise_phone(raw)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+1 415 555 2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+971 50 123 4567", "+971501234567"),
    ],
)
def test_valid_numbers_of_other_countries_pass_mobile_or_not(raw, e164):
    assert normalise_phone(raw) == e164


# The fast path takes these shapes; every one must give what phonenumbers gives.
_prefixes = st.sampled_from(["", "+91", "91", "0", "0091", "+91 ", "+91-", "0 ", "(+91) "])
_digits = st.text("0123456789", min_size=8, max_size=12)
_groups = st.sampled_from([(10,), (5, 5), (3, 3, 4), (4, 3, 3), (2, 4, 4)])
_separators = st.sampled_from([" ", "-", ".", ""])


def grouped(digits: str, groups: tuple[int, ...], separator: str) -> str:
    parts, start = [], 0
    for size in groups:
        parts.append(digits[start : start + size])
        start += size
    parts.append(digits[start:])
    return separator.join(part for part in parts if part)


def outcome(normalise, raw: str) -> str:
    try:
        return normalise(raw)
    except InvalidPhone as error:
        return f"invalid: {error}"


# A thousand examples over the prefixes, groupings and separators; every mobile start is checked
# exhaustively below.
@settings(max_examples=1000, deadline=None)
@given(prefix=_prefixes, digits=_digits, groups=_groups, separator=_separators, first=st.sampled_from("6789"))
def test_the_fast_path_agrees_with_phonenumbers(prefix, digits, groups, separator, first):
    raw = prefix + grouped(first + digits, groups, separator)
    assert outcome(normalise_phone, raw) == outcome(normalise_phone_fully, raw)


def test_the_fast_path_agrees_on_every_mobile_prefix():
    """All 4-digit starts of a ten-digit number beginning 6-9, with two endings each."""
    for start in range(6000, 10000):
        for ending in ("000000", "987654"):
            raw = f"{start}{ending}"
            assert outcome(normalise_phone, raw) == outcome(normalise_phone_fully, raw), raw


@pytest.mark.parametrize(
    "email", ["asha@example.com", "a.b+tag@mail.example.co.in", "x_y@sub-domain.example.org", "O'Neil@ex.ie"]
)
def test_valid_emails(email):
    assert is_valid_email(email)


@pytest.mark.parametrize(
    "email",
    ["asha", "asha@", "@example.com", "asha@example", "asha@@example.com", "asha @example.com",
     "asha@-example.com", "asha@example..com", "asha@exa_mple.com", "a" * 250 + "@example.com"],
)  # fmt: skip
def test_invalid_emails(email):
    assert not is_valid_email(email)


def validator(*header: str) -> RowValidator:
    return RowValidator(map_columns(list(header)))


def test_a_valid_row_gives_the_lead_values_trimmed():
    check = validator("name", "phone", "email", "alternate_phone", "course", "university", "city", "source")
    result = check.validate([" Asha ", "9847012301", " asha@example.com", "", "BSc", "", " Kochi ", "Fair"])
    assert result == LeadValues(
        "Asha", "+919847012301", "asha@example.com", None, "BSc", None, "Kochi", "Fair"
    )


def test_every_reason_of_an_invalid_row_is_given():
    check = validator("name", "phone", "email", "alternate_phone", "city")
    result = check.validate(["", "0484 2345678", "nope", "12", "K" * 121])
    assert result == [
        "name is missing",
        "phone '0484 2345678' is not a mobile number (Indian numbers must be mobiles)",
        "email 'nope' is not a valid email address",
        "alternate_phone '12' is not a valid phone number",
        "city is longer than 120 characters",
    ]


def test_a_short_row_lacks_its_last_cells():
    assert validator("name", "email", "phone").validate(["Asha", "asha@example.com"]) == ["phone is missing"]
