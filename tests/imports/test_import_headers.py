"""Header matching with the contract's aliases, case- and space-insensitive."""

from __future__ import annotations

import pytest

from edcrm.imports.headers import MissingColumns, map_columns


@pytest.mark.parametrize(
    "name", ["name", "student_name", "student name", "full name", " Full  Name ", "NAME"]
)
@pytest.mark.parametrize(
    "phone", ["phone", "phone_number", "phone number", "mobile", "Phone Number", "MOBILE"]
)
def test_every_alias_of_name_and_phone(name, phone):
    columns = map_columns(["id", name, phone])
    assert (columns.index("student_name"), columns.index("phone_number")) == (1, 2)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("email", "email"),
        ("Email ", "email"),
        ("alternate_phone", "alternate_phone"),
        ("Alternate Phone", "alternate_phone"),
        ("course", "course"),
        ("preferred_course", "course"),
        ("Preferred Course", "course"),
        ("university", "university"),
        ("preferred_university", "university"),
        ("CITY", "city"),
        ("source", "source"),
    ],
)
def test_optional_columns_and_their_aliases(header, field):
    assert map_columns(["name", "phone", header]).index(field) == 2


def test_unknown_columns_are_ignored_and_the_first_of_two_aliases_wins():
    columns = map_columns(["Remarks", "Mobile", "Name", "Phone", "Full Name"])
    assert columns.indexes == {"phone_number": 1, "student_name": 2}


def test_a_missing_column_is_named_with_the_headers_found():
    with pytest.raises(MissingColumns) as caught:
        map_columns(["Student", "Contact", ""])
    assert str(caught.value) == (
        "The file has no required columns name (a column headed 'name', 'student_name', 'student name', "
        "'full name') and phone (a column headed 'phone', 'phone_number', 'phone number', 'mobile'). "
        "Headers found: 'Student', 'Contact'."
    )
