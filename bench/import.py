"""Benchmark: a CSV of N leads imported by the import actor, next to a raw COPY of the same leads.

    .venv/bin/python bench/import.py [--rows 1000000]      (or `make bench-import`)

1. Generates N rows (realistic Indian names; phones in the usual mixed shapes, `9847012301`,
   `+91 98470 12301`, `098470-12301`, `919847012301`…; ~2% invalid rows, ~1% duplicate phones) into
   a CSV, and the leads those rows should become, normalised, into a second file.
2. (a) raw COPY: the expected leads, streamed with `COPY … FROM STDIN (FORMAT csv)` into a table that is
   identical to `leads` (same columns, defaults, indexes, unique and foreign-key constraints).
3. (b) the actor: a real `dramatiq edcrm.actors --queues csv_import` worker (one process, one thread) on
   Redis, fed one `import_leads` message; timed from the send to the import's `completed`, which
   includes reading the file twice, validation, duplicate checks, COPY and the ledger. Its peak RSS
   (VmHWM of the worker process) is read at N and, in another worker, at N/10.
   (a) and (b) alternate, --runs times each (default 3), each into emptied, checkpointed tables, so a
   busy moment of a shared machine hits both alike; the ratio is given for the best run of each and
   for the medians.

Prints rows/s of both, the ratio (leads written per second, the same rows in both), and the peak RSS
figures. A fresh PostgreSQL database is created, migrated and dropped. Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

EDCRM_VARIABLES = ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "PORT")


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = words(
    "Aarav Vivaan Aditya Arjun Sai Reyansh Krishna Ishaan Rohan Rahul Vikram Karthik Nikhil Sanjay Suresh "
    "Ramesh Mohammed Abdul Joseph Thomas George Harpreet Gurpreet Amit Ankit Deepak Manoj Pranav Varun "
    "Ananya Diya Aadhya Saanvi Priya Sneha Kavya Lakshmi Meera Anjali Deepa Pooja Neha Fathima Ayesha "
    "Mary Riya Shruti Divya Keerthana Aishwarya Nandini Swati Harini Gayathri"
)
LAST_NAMES = words(
    "Nair Menon Pillai Kurup Panicker Kumar Sharma Verma Reddy Rao Iyer Iyengar Patel Shah Singh Gupta Das "
    "Banerjee Mukherjee Chatterjee Khan Thomas Joseph George Varghese Kurian Naidu Gowda Hegde Joshi "
    "Kulkarni Desai Bhat Shetty Chopra Malhotra Kapoor Agarwal Jain Mishra Tiwari Yadav Chauhan"
)
CITIES = words(
    "Kochi Thrissur Kozhikode Thiruvananthapuram Bengaluru Chennai Hyderabad Mumbai Pune Delhi Kolkata "
    "Ahmedabad Jaipur Lucknow Coimbatore Madurai Mysuru Mangaluru Nagpur Indore"
)
COURSES = ("B.Tech", "BBA", "MBA", "B.Com", "BCA", "MCA", "B.Sc Nursing", "MBBS", "B.Des", "LLB")
UNIVERSITIES = ("Amrita", "Manipal", "VIT", "SRM", "Christ", "KTU", "Anna University", "Symbiosis", "")
SOURCES = ("Website", "Facebook", "Instagram", "Walk-in", "Referral", "Education fair", "Google Ads")
DOMAINS = ("gmail.com", "yahoo.co.in", "outlook.com", "rediffmail.com", "hotmail.com")
#: Starts of Indian mobile numbers under which every ten-digit number is a mobile for phonenumbers.
MOBILE_STARTS = (
    "99",
    "98",
    "97",
    "96",
    "95",
    "94",
    "93",
    "92",
    "91",
    "90",
    "85",
    "84",
    "74",
    "72",
    "70",
    "69",
)
HEADER = ("Student Name", "Mobile", "Email", "Alternate Phone", "Course", "University", "City", "Source")
NOW = "2026-01-01T00:00:00Z"
LEAD_COLUMNS = words(
    "branch_id telecaller_id import_id source_row student_name phone_number email alternate_phone "
    "course university city source status assigned_at created_at"
)


def shapes(national: str) -> tuple[str, ...]:
    return (
        national,
        national,
        national,
        f"+91 {national[:5]} {national[5:]}",
        f"+91-{national}",
        f"0{national[:5]}-{national[5:]}",
        f"91{national}",
        f"({national[:3]}) {national[3:6]}-{national[6:]}",
    )


def generate(
    rows: int, csv_path: Path, leads_path: Path, owner: tuple[int, list[int], int], seed: int = 42
) -> tuple[int, int, int]:
    """Write the import's CSV and the raw-COPY file of the leads it should give (for branch, telecallers
    and import `owner`); (valid, invalid, duplicate) row counts."""
    branch_id, telecallers, import_id = owner
    rng = random.Random(seed)
    valid = invalid = duplicates = 0
    seen: list[str] = []  # a few earlier phones to repeat
    stride = 7_919  # coprime with 10**8: distinct bodies for distinct counters
    with open(csv_path, "w", newline="", encoding="utf-8") as out, open(leads_path, "w", newline="") as leads:
        writer, lead_writer = csv.writer(out), csv.writer(leads)
        writer.writerow(HEADER)
        for n in range(rows):
            source_row = n + 2
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name = f"{first} {last}"
            start = MOBILE_STARTS[n % len(MOBILE_STARTS)]
            national = f"{start}{(n // len(MOBILE_STARTS) * stride) % 10**8:08d}"
            email = f"{first}.{last}{n}@{rng.choice(DOMAINS)}".lower() if rng.random() < 0.6 else ""
            city, course = rng.choice(CITIES), rng.choice(COURSES)
            university, source = rng.choice(UNIVERSITIES), rng.choice(SOURCES)
            roll = rng.random()
            if roll < 0.02:  # invalid, in one of several ways
                invalid += 1
                kind = n % 4
                phone = rng.choice(shapes(national))
                if kind == 0:
                    phone = national[:7]
                elif kind == 1:
                    phone = f"0484 {rng.randrange(2000000, 2999999)}"  # a Kochi landline
                elif kind == 2:
                    name = ""
                else:
                    email = f"{first}@"
                writer.writerow((name, phone, email, "", course, university, city, source))
                continue
            if roll < 0.03 and seen:  # a phone given earlier in the file, in another shape
                duplicates += 1
                writer.writerow(
                    (name, rng.choice(shapes(rng.choice(seen))), email, "", course, "", city, source)
                )
                continue
            valid += 1
            if len(seen) < 1000 and rng.random() < 0.01:
                seen.append(national)
            writer.writerow((name, rng.choice(shapes(national)), email, "", course, university, city, source))
            telecaller_id = telecallers[valid % len(telecallers)]
            lead_writer.writerow(
                (branch_id, telecaller_id, import_id, source_row, name, f"+91{national}", email or None,
                 None, course, university or None, city, source, "new", NOW, NOW)
            )  # fmt: skip
    return valid, invalid, duplicates


# -- the database ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    url = sa.make_url(server_url)
    name = f"edcrm_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def edcrm_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EDCRM_VARIABLES}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def seed(engine: sa.Engine) -> tuple[int, int, list[int]]:
    """An admin's branch with three telecallers, and a second branch for the N/10 run: ids."""
    with engine.begin() as conn:
        branches = []
        for name in ("Bench", "Bench tenth"):
            branch_id = conn.execute(
                sa.text(
                    "INSERT INTO branches (name, lead_cursor, created_at) VALUES (:n, 0, now()) RETURNING id"
                ),
                {"n": name},
            ).scalar_one()
            branches.append(branch_id)
        telecallers = [
            conn.execute(
                sa.text(
                    "INSERT INTO users (email, password_hash, role, active, branch_id, created_at) "
                    "VALUES (:e, 'x', 'telecaller', true, :b, now()) RETURNING id"
                ),
                {"e": f"caller{i}@bench.test", "b": branches[0]},
            ).scalar_one()
            for i in range(3)
        ]
    return branches[0], branches[1], telecallers


def checkpoint(engine: sa.Engine) -> None:
    """Flush what earlier steps wrote, so that neither timed run pays for the other's checkpoint."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("CHECKPOINT"))


def create_copy_target(engine: sa.Engine, branch_id: int) -> int:
    """bench_leads, a table identical to leads (foreign keys included), and an import row for the raw
    COPY's leads to point at: its id."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bench_leads (LIKE leads INCLUDING ALL)"))
        for constraint in conn.execute(
            sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'leads'::regclass AND contype = 'f'"
            )
        ).scalars():
            conn.execute(sa.text(f"ALTER TABLE bench_leads ADD {constraint}"))
        return conn.execute(
            sa.text(
                "INSERT INTO lead_imports (branch_id, filename, telecaller_ids, status, total_rows, "
                "processed_rows, successful_rows, failed_rows, duplicate_rows, distribution, created_at) "
                "VALUES (:b, 'raw', '[]', 'completed', 0, 0, 0, 0, 0, '{}', now()) RETURNING id"
            ),
            {"b": branch_id},
        ).scalar_one()


def raw_copy(engine: sa.Engine, leads_path: Path) -> tuple[int, float]:
    """COPY the expected leads, streamed from their file, into bench_leads; (rows, seconds)."""
    columns = ", ".join(LEAD_COLUMNS)
    raw = engine.raw_connection()
    try:
        started = time.perf_counter()
        with raw.driver_connection.cursor() as cursor:
            statement = f"COPY bench_leads ({columns}) FROM STDIN (FORMAT csv)"
            with cursor.copy(statement) as copy, open(leads_path, "rb") as source:
                copied = 0
                for block in iter(lambda: source.read(1024 * 1024), b""):
                    copy.write(block)
                    copied += block.count(b"\n")  # one lead a line: no field holds a newline
        raw.driver_connection.commit()
        elapsed = time.perf_counter() - started
    finally:
        raw.close()
    return copied, elapsed


# -- the actor ---------------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run_actor(
    env: dict[str, str], engine: sa.Engine, import_id: int, log_path: Path
) -> tuple[float, float, float]:
    """One worker, one import: (seconds from send to completed, the worker process's peak RSS in MB,
    seconds from send to the import's start)."""
    argv = [
        str(BIN / "dramatiq"),
        "edcrm.actors",
        "--queues",
        "csv_import",
        "--processes",
        "1",
        "--threads",
        "1",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while "Worker process is ready for action" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        # The worker process (not the fork that serves Dramatiq's Prometheus metrics), by its log line.
        workers = re.findall(r"\[PID (\d+)\] \[\w+\] \[dramatiq\.WorkerProcess\(0\)\]", log_path.read_text())
        (worker_pid,) = {int(pid) for pid in workers} & set(children_of(process.pid))
        # Sent from a separate process, as a web process would; the clock starts at the send.
        code = (
            "import time\n"
            "from edcrm import create_app\n"
            "from edcrm.actors.imports import import_leads\n"
            "from edcrm.extensions import db\n"
            "from edcrm.models import LeadImport\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            f"    message = import_leads.message({import_id})\n"
            f"    db.session.get(LeadImport, {import_id}).job_id = message.message_id\n"
            "    db.session.commit()\n"
            "    print(time.time(), flush=True)\n"
            "    import_leads.broker.enqueue(message)\n"
        )
        sent = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True
        )
        sent_at = float(sent.stdout.split()[-1])
        while True:
            with engine.connect() as conn:
                status, error, started_at, finished_at = conn.execute(
                    sa.text("SELECT status, error, started_at, finished_at FROM lead_imports WHERE id = :i"),
                    {"i": import_id},
                ).one()
            if status in ("completed", "failed", "cancelled"):
                break
            if process.poll() is not None:
                raise RuntimeError(f"the worker died:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        elapsed = finished_at.timestamp() - sent_at
        if status != "completed":
            raise RuntimeError(f"the import ended {status}: {error}")
        # Included in elapsed: the time the message waited for the idle worker's next poll of Redis
        # (Dramatiq backs off up to its worker timeout, 1 s), shown apart for information.
        return elapsed, peak_rss_mb(worker_pid), started_at.timestamp() - sent_at
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def queue_file(engine: sa.Engine, storage_root: Path, csv_path: Path, branch_id: int, telecallers) -> int:
    """Put the CSV where the upload would (the storage) and create its import row, queued: its id."""
    key = f"imports/{uuid.uuid4().hex}/{csv_path.name}"
    target = storage_root / key
    target.parent.mkdir(parents=True)
    os.link(csv_path, target)  # the same temporary folder: no copy needed
    with engine.begin() as conn:
        return conn.execute(
            sa.text(
                "INSERT INTO lead_imports (branch_id, filename, storage_key, telecaller_ids, status, "
                "total_rows, processed_rows, successful_rows, failed_rows, duplicate_rows, distribution, "
                "checkpoint_row, created_at) "
                "VALUES (:b, :f, :k, CAST(:t AS jsonb), 'queued', 0, 0, 0, 0, 0, '{}', 0, now()) RETURNING id"
            ),
            {"b": branch_id, "f": csv_path.name, "k": key, "t": str(list(telecallers))},
        ).scalar_one()


def import_counts(engine: sa.Engine, import_id: int) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT total_rows, successful_rows, failed_rows, duplicate_rows, distribution "
                "FROM lead_imports WHERE id = :i"
            ),
            {"i": import_id},
        ).mappings()
        return dict(row.one())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--runs", type=int, default=3, help="raw COPY and actor runs, interleaved (default 3)"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = parser.parse_args()
    n, tenth = args.rows, max(1, args.rows // 10)

    with (
        tempfile.TemporaryDirectory(prefix="edcrm-bench-import-") as tmp,
        fresh_database(args.postgres) as db_url,
    ):
        tmp_path = Path(tmp)
        storage = tmp_path / "storage"
        storage.mkdir()
        redis.Redis.from_url(args.redis).flushdb()
        env = edcrm_env(
            DATABASE_URL=db_url,
            REDIS_URL=args.redis,
            STORAGE_URL=storage.as_uri(),
            SECRET_KEY="bench",
            EDCRM_INSTANCE_PATH=str(tmp_path / "instance"),
        )
        subprocess.run(
            [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        engine = sa.create_engine(db_url)

        branch_id, tenth_branch_id, telecallers = seed(engine)
        copy_import_id = create_copy_target(engine, branch_id)

        print(f"generating {n:,} rows and {tenth:,} rows ...", flush=True)
        big, big_leads = tmp_path / "leads.csv", tmp_path / "leads.copy"
        small = tmp_path / "leads-tenth.csv"
        valid, invalid, dups = generate(n, big, big_leads, (branch_id, telecallers, copy_import_id))
        generate(
            tenth, small, tmp_path / "unused.copy", (tenth_branch_id, telecallers, copy_import_id), seed=7
        )
        size_mb = big.stat().st_size / 1e6
        print(f"  {size_mb:.1f} MB CSV: {valid:,} valid rows, {invalid:,} invalid, {dups:,} duplicates")

        # Raw COPY and actor runs interleaved, --runs of each, each into empty tables (emptied and
        # checkpointed before it), so that both meet the machine in the same states; the ratio compares
        # the best run of each (PostgreSQL at its best against the actor at its best), and the medians.
        copy_runs, actor_runs = [], []
        for run in range(args.runs):
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE bench_leads"))
            checkpoint(engine)
            copied, copy_s = raw_copy(engine, big_leads)
            copy_runs.append(copy_s)
            print(
                f"(a) raw COPY of {copied:,} leads, run {run + 1}: {copy_s:.2f} s, "
                f"{copied / copy_s:,.0f} rows/s"
            )

            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE leads CASCADE"))
            import_id = queue_file(engine, storage, big, branch_id, telecallers)
            checkpoint(engine)
            actor_s, rss, queued_s = run_actor(env, engine, import_id, tmp_path / f"worker-n-{run}.log")
            counts = import_counts(engine, import_id)
            assert counts["successful_rows"] == valid == copied, (counts, valid, copied)
            assert counts["failed_rows"] == invalid and counts["duplicate_rows"] == dups, counts
            actor_runs.append((actor_s, rss))
            print(
                f"(b) import actor, {n:,} rows, run {run + 1}: {actor_s:.2f} s "
                f"(of which {queued_s:.2f} s before the worker started it), "
                f"{n / actor_s:,.0f} rows/s read, "
                f"{valid / actor_s:,.0f} leads/s written ({counts['successful_rows']:,} leads, "
                f"{counts['failed_rows']:,} invalid, {counts['duplicate_rows']:,} duplicates; "
                f"distribution {sorted(counts['distribution'].values())})",
                flush=True,
            )
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE bench_leads"))
        copy_s, actor_s = min(copy_runs), min(run[0] for run in actor_runs)
        rss_n = max(run[1] for run in actor_runs)  # memory: the worst run
        median_copy, median_actor = statistics.median(copy_runs), statistics.median(r[0] for r in actor_runs)

        tenth_id = queue_file(engine, storage, small, tenth_branch_id, telecallers)
        tenth_s, rss_tenth, _ = run_actor(env, engine, tenth_id, tmp_path / "worker-tenth.log")
        print(f"    import actor, {tenth:,} rows: {tenth_s:.2f} s, {tenth / tenth_s:,.0f} rows/s read")

        ratio = copy_s / actor_s  # the same leads written by both: the ratio of their rates
        growth = (rss_n - rss_tenth) / rss_tenth
        print()
        print(
            f"best of {args.runs}: raw COPY {copy_s:.2f} s ({valid / copy_s:,.0f} leads/s), "
            f"actor {actor_s:.2f} s ({valid / actor_s:,.0f} leads/s)"
        )
        print(f"ratio (b)/(a), leads written per second, best runs: {ratio:.0%}   (target >= 50%)")
        print(
            f"ratio (b)/(a), medians of {args.runs} runs: {median_copy / median_actor:.0%}   "
            f"(raw {median_copy:.2f} s, actor {median_actor:.2f} s)"
        )
        print(f"peak RSS of the worker at N/10 = {tenth:,}: {rss_tenth:.1f} MB")
        print(f"peak RSS of the worker at N    = {n:,}: {rss_n:.1f} MB   (target <= 150 MB)")
        print(f"growth from N/10 to N: {growth:+.1%}   (target <= +20%)")
        engine.dispose()


if __name__ == "__main__":
    main()
