"""The login, logout and home pages, the layout, and CSRF on forms.

These tests keep no application context open between requests (unlike the `branch` fixture), so each
request loads its user from its own session cookie, as in production.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import pytest

from edcrm.auth import page_auth
from edcrm.extensions import db
from edcrm.models import Branch, Lead, Role, User
from edcrm.routes.web.session import safe_next
from tests.support.pages import csrf_token, text
from tests.support.people import PASSWORD, login, make_user


@pytest.fixture
def people(app):
    """An admin and a telecaller of Kochi (with two leads), and an admin of Thrissur."""
    with app.app_context():
        kochi, thrissur = Branch(name="Kochi"), Branch(name="Thrissur")
        db.session.add_all([kochi, thrissur])
        db.session.commit()
        admin = make_user(kochi, Role.ADMIN, email="admin@kochi.test")
        caller = make_user(kochi, Role.TELECALLER, email="caller@kochi.test")
        make_user(kochi, Role.TELECALLER, email="idle@kochi.test", active=False)
        other = make_user(thrissur, Role.ADMIN, email="admin@thrissur.test")
        for n in range(2):
            db.session.add(
                Lead(branch_id=kochi.id, telecaller_id=caller.id, student_name="S", phone_number=f"+9{n}")
            )
        db.session.commit()
        return SimpleNamespace(admin=admin.email, caller=caller.email, other=other.email)


def test_the_home_page_sends_visitors_to_sign_in_and_back(client, people):
    response = client.get("/")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")

    response = login(client, people.caller, next_url="/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_the_login_page_has_a_form(client):
    response = client.get("/login")

    assert response.status_code == 200
    page = text(response)
    assert 'name="email"' in page and 'name="password"' in page and 'type="submit"' in page


def test_a_telecaller_signs_in_and_sees_who_they_are(client, people):
    response = login(client, people.caller)
    assert response.status_code == 302

    page = text(client.get("/"))
    assert "caller@kochi.test" in page
    assert "telecaller" in page and "Kochi" in page
    assert re.search(r"Leads assigned to you</dt><dd>2<", page)
    assert "Signed in as caller@kochi.test" in page


def test_an_admin_sees_their_branch(client, people):
    login(client, people.admin)

    page = text(client.get("/"))
    assert "admin" in page and "Kochi" in page
    assert re.search(r"Leads in the branch</dt><dd>2<", page)
    assert re.search(r"Active telecallers</dt><dd>1<", page)


def test_another_branchs_admin_sees_none_of_kochis_leads(client, people):
    login(client, people.other)

    page = text(client.get("/"))
    assert "Thrissur" in page
    assert re.search(r"Leads in the branch</dt><dd>0<", page)


@pytest.mark.parametrize(
    ("email", "password"),
    [("caller@kochi.test", "wrong"), ("nobody@kochi.test", PASSWORD), ("idle@kochi.test", PASSWORD)],
)
def test_bad_logins_are_refused_with_a_message(client, people, email, password):
    response = login(client, email, password)

    assert response.status_code == 401
    assert "Wrong email or password" in text(response)
    assert client.get("/").status_code == 302


def test_an_empty_form_names_the_missing_fields(client):
    response = client.post("/login", data={"email": "", "password": ""})

    assert response.status_code == 422
    assert text(response).count("This field is required.") == 2


@pytest.mark.parametrize(
    "target", ["https://evil.test/", "//evil.test/", "/\\evil.test", "/%09/evil.test", "javascript:alert(1)"]
)
def test_next_never_leads_off_the_site(client, people, target):
    response = login(client, people.caller, next_url=target)

    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_next_keeps_a_local_path_and_its_query(client, people):
    response = login(client, people.caller, next_url="/imports%3Fpage%3D2")

    assert response.headers["Location"] == "/imports?page=2"


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/jobs?state=failed", True), ("/", True), (None, False), ("", False), ("jobs", False),
     ("//evil.test", False), ("/\\evil.test", False), ("/\t/evil.test", False),
     ("http://evil.test/x", False)],
)  # fmt: skip
def test_safe_next(target, safe):
    assert safe_next(target) == (target if safe else None)


def test_a_signed_in_user_visiting_login_goes_home(client, people):
    login(client, people.caller)

    response = client.get("/login")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_logout_signs_out(client, people):
    login(client, people.caller)

    response = client.post("/logout")

    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_a_session_cookie_copied_before_logout_opens_nothing_after(client, people):
    login(client, people.caller)
    copied = client.get_cookie("session").value

    client.post("/logout")
    client.set_cookie("session", copied)

    assert client.get("/").status_code == 302


def test_a_remember_me_cookie_copied_before_logout_opens_nothing_after(app, client, people):
    response = login(client, people.caller, remember="y")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    copied = client.get_cookie("remember_token").value
    fresh = app.test_client()
    fresh.set_cookie("remember_token", copied)
    assert fresh.get("/").status_code == 200  # it works on its own, in a browser without the session

    client.post("/logout")
    replayed = app.test_client()
    replayed.set_cookie("remember_token", copied)

    assert replayed.get("/").status_code == 302


def test_remember_me_lasts_a_month_not_a_year(client, people):
    response = login(client, people.caller, remember="y")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token="))
    expires = parsedate_to_datetime(cookie.split("Expires=", 1)[1].split(";", 1)[0])
    days = (expires - datetime.now(UTC)).days

    assert 29 <= days <= 30


def test_signing_out_ends_the_users_other_sessions_too(app, client, people):
    """One generation per user: signing out on one device signs out the others (their cookies were
    issued under the same generation); API tokens are not touched."""
    other_device = app.test_client()
    login(other_device, people.caller)
    login(client, people.caller)

    client.post("/logout")

    assert other_device.get("/").status_code == 302
    login(client, people.caller)
    assert client.get("/").status_code == 200  # a new sign-in is a new session


def test_a_new_password_ends_the_sessions_and_reactivation_does_not_revive_them(app, client, people):
    login(client, people.caller)
    with app.app_context():
        User.by_email(people.caller).set_password("another-password")
        db.session.commit()
    assert client.get("/").status_code == 302

    login(client, people.caller, "another-password")
    with app.app_context():
        User.by_email(people.caller).active = False
        db.session.commit()
        User.by_email(people.caller).active = True
        db.session.commit()
    assert client.get("/").status_code == 302


def test_a_cookie_without_a_session_generation_opens_nothing(app, client, people):
    with app.app_context():
        user_id = User.by_email(people.caller).id
    for forged in (str(user_id), f"{user_id}:x", f"{user_id}:1", f"{2**63}:0", f"{user_id}:0:0", "٣:0"):
        with client.session_transaction() as session:
            session["_user_id"] = forged
            session["_fresh"] = True
        assert client.get("/").status_code == 302, forged
    with client.session_transaction() as session:
        session["_user_id"] = f"{user_id}:0"
    assert client.get("/").status_code == 200  # the form the app itself writes


def test_logout_is_not_a_link(client, people):
    login(client, people.caller)

    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


def test_a_deactivated_user_is_signed_out_on_their_next_request(app, client, people):
    login(client, people.caller)
    with app.app_context():
        User.by_email(people.caller).active = False
        db.session.commit()

    assert client.get("/").status_code == 302


def test_a_page_for_admins_shows_telecallers_a_403_page(app, people):
    @page_auth(Role.ADMIN)
    def admin_only():
        return "for admins"

    app.add_url_rule("/admin-only", view_func=admin_only)
    client = app.test_client()

    login(client, people.caller)
    response = client.get("/admin-only")
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "This needs the admin role." in text(response)

    client.post("/logout")
    login(client, people.admin)
    assert text(client.get("/admin-only")) == "for admins"


def test_an_unknown_page_is_an_html_404_in_the_layout(client, people):
    login(client, people.caller)

    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = text(response)
    assert "Not Found" in page
    assert "caller@kochi.test" in page  # the layout, with the signed-in user


def test_the_layout_is_phone_friendly_and_self_contained(client, people):
    login(client, people.caller)
    page = text(client.get("/"))

    assert 'name="viewport"' in page
    assert "/static/style.css" in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # no CDN, nothing from the network
    css = client.get("/static/style.css")
    assert css.status_code == 200
    assert "@media" in css.get_data(as_text=True)
    css.close()


def test_navigation_links_only_to_pages_that_exist(client, people):
    login(client, people.admin)
    page = text(client.get("/"))

    nav = page[page.index("<nav") : page.index("</nav>")]
    assert 'href="/"' in nav
    served = {rule.rule for rule in client.application.url_map.iter_rules()}
    for path in ("/imports", "/jobs"):  # each shows once its feature serves it
        assert (f'href="{path}"' in nav) == (path in served), path


# -- CSRF ----------------------------------------------------------------------------------------------


def test_login_without_the_csrf_token_is_refused(csrf_app):
    client = csrf_app.test_client()

    response = login(client, "caller@kochi.test")

    assert response.status_code == 400
    assert "CSRF" in text(response)
    assert client.get("/").status_code == 302


def test_login_with_the_forms_csrf_token_works(csrf_app):
    client = csrf_app.test_client()
    token = csrf_token(text(client.get("/login")))

    response = login(client, "caller@kochi.test", csrf_token=token)

    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_logout_needs_the_csrf_token(csrf_app):
    client = csrf_app.test_client()
    login(client, "caller@kochi.test", csrf_token=csrf_token(text(client.get("/login"))))
    home = client.get("/")

    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still signed in

    assert client.post("/logout", data={"csrf_token": csrf_token(text(home))}).status_code == 302
    assert client.get("/").status_code == 302


def test_the_api_needs_no_csrf_token(csrf_app):
    client = csrf_app.test_client()

    response = client.post("/api/auth/token", json={"email": "caller@kochi.test", "password": PASSWORD})

    assert response.status_code == 200
