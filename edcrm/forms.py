"""Flask-WTF forms of the pages (each carries a CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, EmailField, PasswordField, SelectMultipleField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget


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
        coerce=int,
        validate_choice=False,
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired("Choose at least one telecaller.")],
    )
