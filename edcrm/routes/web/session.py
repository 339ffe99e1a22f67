"""GET/POST /login and POST /logout."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from ... import login_limit
from ...extensions import db
from ...forms import LoginForm
from . import bp


def safe_next(target: str | None) -> str | None:
    """target if it is a path of this site, else None: `next` must not send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    # Browsers read "\" as "/" and drop tabs and newlines: "/\evil.test" and "/\t/evil.test" leave the site.
    if "\\" in target or any(ord(char) < 0x21 or ord(char) == 0x7F for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _after_login() -> str:
    return safe_next(request.args.get("next")) or url_for("web.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(_after_login())
    form = LoginForm()
    status, headers = 200, {}
    if form.validate_on_submit():
        try:
            # Both fields are required, so a validated form has them; `or ""` only narrows the type.
            user = login_limit.authenticate(form.email.data or "", form.password.data or "")
        except login_limit.TooManySignIns as exc:
            form.form_errors.append(str(exc))
            status, headers = 429, {"Retry-After": str(exc.retry_after)}
        else:
            if user is not None:
                login_user(user, remember=form.remember.data)
                flash(f"Signed in as {user.email}.", "success")
                return redirect(_after_login())
            form.form_errors.append("Wrong email or password, or the account is deactivated.")
            status = 401
    elif form.is_submitted():
        status = 422
    return render_template("login.html", form=form), status, headers


@bp.post("/logout")
def logout():
    """Sign out, on the server too: every session and remember-me cookie of the user stops working
    (User.end_sessions), so a copy of one taken before is worth nothing."""
    if current_user.is_authenticated:
        current_user.end_sessions()
        db.session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("web.login"))
