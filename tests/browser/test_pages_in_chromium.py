"""The pages in a real browser: an admin imports a CSV through the form and watches it finish without
reloading, downloads the error report, retries a failed job from the jobs page and sees it succeed; a
telecaller is refused the admin pages; the pages fit a phone's screen."""

from __future__ import annotations

import csv
import hashlib
import io
import random

import requests
from playwright.sync_api import expect

from tests.support.audio_samples import wav
from tests.support.processes import wait_for

PHONE = {"width": 390, "height": 844}


def sign_in(context, served, login: dict):
    page = context.new_page()
    page.goto(f"{served.url}/login")
    page.get_by_label("Email").fill(login["email"])
    page.get_by_label("Password").fill(login["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {login['email']}")).to_be_visible()
    return page


def leads_csv(rows: int, seed: int = 7) -> tuple[bytes, int, int]:
    """A CSV of rows leads, a few invalid and a few duplicated; (bytes, valid rows, rejected rows)."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Student Name", "Mobile", "Email", "City"])
    phones, rejected = [], 0
    for n in range(rows):
        if n % 97 == 5:
            writer.writerow([f"Broken {n}", "12345", "not-an-email", "Kochi"])  # invalid phone and email
            rejected += 1
        elif n % 89 == 7 and phones:
            writer.writerow([f"Again {n}", rng.choice(phones), "", "Kochi"])  # a phone seen earlier
            rejected += 1
        else:
            phone = f"9{rng.randrange(10**7, 10**8)}{n % 10}"
            while phone in phones:
                phone = f"9{rng.randrange(10**7, 10**8)}{n % 10}"
            phones.append(phone)
            writer.writerow([f"Student {n}", phone, f"s{n}@example.test", "Kochi"])
    return out.getvalue().encode(), rows - rejected, rejected


def test_an_admin_imports_a_csv_and_watches_it_finish(browser_context, served, shots, tmp_path):
    data, valid, rejected = leads_csv(20_000)
    path = tmp_path / "leads.csv"
    path.write_bytes(data)
    callers = served.demo["telecallers"][:2]

    page = sign_in(browser_context, served, served.demo["admin"])
    page.get_by_role("link", name="Imports", exact=True).click()
    page.get_by_role("link", name="Import a CSV", exact=True).click()
    page.get_by_label("CSV file").set_input_files(path)
    for caller in callers:
        page.get_by_label(caller["email"]).check()
    shots(page, "1-form")
    page.get_by_role("button", name="Upload and import").click()

    expect(page.get_by_text("is queued")).to_be_visible()
    bar = page.get_by_role("progressbar")
    first = int(bar.get_attribute("aria-valuenow"))
    assert first < 100  # the page came before the end: the bar has to move
    page.evaluate("window.notReloaded = true")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=120_000)
    expect(page.locator('[data-field="status"]')).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.notReloaded === true")  # it moved by polling, never by a reload
    shots(page, "2-completed")

    assert page.locator('[data-field="successful_rows"]').inner_text() == str(valid)
    rows = page.locator("#distribution tr")
    expect(rows).to_have_count(2)
    shares = {}
    for index in range(2):
        email, count = rows.nth(index).locator("td").all_inner_texts()
        shares[email] = int(count)
    assert set(shares) == {caller["email"] for caller in callers}
    assert sum(shares.values()) == valid and max(shares.values()) - min(shares.values()) <= 1

    with page.expect_download() as download:
        page.get_by_role("link", name="Download the error report (CSV)").click()
    raw = download.value.path().read_bytes()
    assert raw.startswith("\ufeff".encode())  # a BOM, so that Excel reads the names as UTF-8
    report = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert report[0][:2] == ["row_number", "reasons"]
    assert len(report) - 1 == rejected
    assert report[1][0] == "7" and "phone" in report[1][1]  # data row 5 is line 7 of the file


def make_call_log(served, telecaller: dict) -> int:
    """A lead for telecaller (through the import API) and a call to it (through the mobile API)."""
    admin = {"Authorization": f"Bearer {served.demo['admin']['token']}"}
    body = b"name,phone\nRecorded Lead,98470%05d\n" % random.randrange(10**5)
    created = requests.post(
        f"{served.url}/api/imports",
        files={"file": ("one.csv", body, "text/csv")},
        data={"telecaller_ids": str(telecaller["id"])},
        headers=admin,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    import_url = f"{served.url}/api/imports/{created.json()['id']}"
    wait_for(
        lambda: requests.get(import_url, headers=admin, timeout=30).json()["status"] == "completed",
        timeout=30,
        what="the one-lead import",
    )
    mine = {"Authorization": f"Bearer {telecaller['token']}"}
    lead = requests.get(f"{served.url}/api/leads?limit=500", headers=mine, timeout=30).json()["items"][-1]
    call = {"lead_id": lead["id"], "outcome": "connected", "duration_seconds": 60}
    return requests.post(f"{served.url}/api/call-logs", json=call, headers=mine, timeout=30).json()["id"]


def test_a_job_that_failed_while_s3_was_down_is_retried_from_the_jobs_page(browser_context, served, shots):
    telecaller = served.demo["telecallers"][0]
    mine = {"Authorization": f"Bearer {telecaller['token']}"}
    call_log_id = make_call_log(served, telecaller)
    audio = wav(2.0)
    api = f"{served.url}/api/recordings/uploads"
    upload = requests.post(
        api,
        json={
            "call_log_id": call_log_id,
            "filename": "call.wav",
            "expected_chunks": 1,
            "sha256": hashlib.sha256(audio).hexdigest(),
        },
        headers=mine,
        timeout=30,
    ).json()["upload_id"]
    assert requests.put(f"{api}/{upload}/chunks/0", data=audio, headers=mine, timeout=30).status_code == 200

    with served.s3.stopped():  # S3 goes down: every attempt fails, then the job is failed for good
        job_id = requests.post(f"{api}/{upload}/complete", headers=mine, timeout=30).json()["job_id"]
        wait_for(
            lambda: requests.get(f"{api}/{upload}", headers=mine, timeout=30).json()["status"] == "failed",
            timeout=60,
            what="the upload to fail while S3 is down",
        )

    page = sign_in(browser_context, served, served.demo["admin"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name="failed").click()
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text("process_chunked_recording")
    expect(row.locator(".status")).to_have_text("failed")
    shots(page, "1-failed-jobs")

    page.get_by_role("link", name="process_chunked_recording").first.click()
    expect(page.get_by_text("Attempt 4")).to_be_visible()
    expect(page.locator(".errors li")).to_have_count(4)
    assert "Could not connect" in page.locator(".errors li").first.inner_text()
    page.get_by_role("link", name="All jobs").click()
    page.get_by_role("link", name="failed").click()

    page.locator(f'tr[data-job-id="{job_id}"]').get_by_role("button", name="Retry").click()
    flash = page.locator(".flash-success")
    expect(flash).to_contain_text("is queued again")
    flash.get_by_role("link", name="process_chunked_recording").click()
    expect(page.locator('[data-field="state"]')).to_have_text("succeeded", timeout=60_000)
    shots(page, "2-succeeded")

    status = requests.get(f"{api}/{upload}", headers=mine, timeout=30).json()
    assert status["status"] == "completed" and status["recording_id"] is not None
    # The job's page links to what it made; the link leads to a signed S3 URL of the same bytes.
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Recording #{status['recording_id']}").click()
    assert download.value.path().read_bytes() == audio
    content = f"{served.url}/api/call-logs/{call_log_id}/recording/content"
    assert requests.get(content, headers=mine, timeout=30).content == audio


def test_a_telecaller_is_refused_the_jobs_and_imports_pages(browser_context, served, shots):
    page = sign_in(browser_context, served, served.demo["telecallers"][1])
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Home")).to_be_visible()
    expect(nav.get_by_role("link", name="Jobs")).to_have_count(0)
    expect(nav.get_by_role("link", name="Imports")).to_have_count(0)
    for path in ("/jobs", "/imports", "/imports/new"):
        response = page.goto(f"{served.url}{path}")
        assert response.status == 403, path
        expect(page.get_by_role("heading", name="403 · Forbidden")).to_be_visible()
    shots(page, "refused")


def test_the_pages_fit_a_phones_screen(chromium, served, shots):
    context = chromium.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = sign_in(context, served, served.demo["admin"])
        for name, path in [
            ("home", "/"),
            ("jobs", "/jobs"),
            ("imports", "/imports"),
            ("new", "/imports/new"),
        ]:
            page.goto(f"{served.url}{path}")
            shots(page, f"phone-{name}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} is {width}px wide on a {PHONE['width']}px screen"
    finally:
        context.close()


def test_the_jobs_list_follows_new_jobs_without_a_reload(browser_context, served, shots):
    page = sign_in(browser_context, served, served.demo["admin"])
    page.goto(f"{served.url}/jobs")
    page.evaluate("window.notReloaded = true")
    admin = {"Authorization": f"Bearer {served.demo['admin']['token']}"}
    created = requests.post(
        f"{served.url}/api/imports",
        files={"file": ("live.csv", b"name,phone\nLive Lead,9847011111\n", "text/csv")},
        data={"telecaller_ids": str(served.demo["telecallers"][2]["id"])},
        headers=admin,
        timeout=30,
    ).json()
    row = page.locator(f'tr[data-job-id="{created["job_id"]}"]')
    expect(row.locator(".status")).to_have_text("succeeded", timeout=30_000)
    expect(row).to_contain_text(f"Import #{created['id']}")
    assert page.evaluate("window.notReloaded === true")
    shots(page, "live")
