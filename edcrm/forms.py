"""Flask-WTF forms of the pages (each carries a CSRF token)."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, EmailField, PasswordField, SelectMultipleField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from .permissions import MAX_ID

_ID_DIGITS = re.compile(r"[1-9][0-9]{0,9}")


def record_id(value) -> int:
    """A record's id from a form: ASCII digits without a leading zero, within 1..MAX_ID, else ValueError
    (the field's error). int() would take "٣", " 3" or "3_0", and an id past MAX_ID would reach the
    database."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _ID_DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise ValueError(f"{str(value)[:20]!r} is not an id")
    if not 0 < number <= MAX_ID:
        raise ValueError(f"{number} is not an id")
    return number


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in on this device")


class ImportForm(FlaskForm):
    """A CSV of leads and the telecallers to share them between (choices: the branch's active ones).

    The chosen ids are not checked against the choices here: the import's own check names any id that
    is not an active telecaller of the branch (one may have been deactivated since the form was shown).
    """

    file = FileField("CSV file", validators=[FileRequired("Choose the CSV file to import.")])
    telecaller_ids = SelectMultipleField(
        "Share the leads between",
        coerce=record_id,
        validate_choice=False,
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired("Choose at least one telecaller.")],
    )
