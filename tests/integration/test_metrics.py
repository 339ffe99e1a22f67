"""Metrics from the real processes: a `dramatiq edcrm.actors` worker's Prometheus endpoint, scraped over
HTTP after jobs ran, and gunicorn's web processes adding up their counts in /metrics."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    free_port,
    run_flask,
    start_dramatiq,
    start_gunicorn,
    wait_for,
    wait_for_job,
)

METRICS_TOKEN = "integration-metrics-token"


@pytest.fixture
def env(env):
    """The integration environment (an empty ledger and Redis database), with a metrics token."""
    return env | {"METRICS_TOKEN": METRICS_TOKEN}


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, frozenset], float] | None:
    """The samples of a Prometheus endpoint, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def ping(env, *options: str) -> str:
    (job_id,) = run_flask("edcrm", "jobs", "ping", *options, env=env).stdout.split()
    return job_id


def test_a_worker_serves_its_job_metrics_to_prometheus(env, engine, tmp_path):
    port = free_port()
    env = env | {
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(port),
        "dramatiq_prom_db": str(tmp_path / "prometheus"),
    }
    url = f"http://127.0.0.1:{port}/metrics"
    ok, failing, cancelled = ping(env), ping(env, "--fail"), ping(env)
    run_flask("edcrm", "jobs", "cancel", cancelled, env=env)
    ping_labels = frozenset({"queue_name": "default", "actor_name": "ping"}.items())

    with start_dramatiq(env, tmp_path / "dramatiq.log", processes=2, threads=2) as worker:
        wait_for_job(engine, ok, "succeeded", watch=worker)
        wait_for_job(engine, failing, "failed", watch=worker)

        def settled():
            samples = scrape(url)
            # The last attempt is written to the ledger a moment before the metrics count it.
            if samples and samples.get(("dramatiq_messages_total", ping_labels)) == 1 + 4:
                return samples
            return None

        samples = wait_for(settled, timeout=15, what="the worker's metrics", watch=worker)
        # Both worker processes' counts, added up; the cancelled job was skipped, not counted.
        assert samples[("dramatiq_message_errors_total", ping_labels)] == 4
        assert samples[("dramatiq_message_retries_total", ping_labels)] == 3
        assert samples[("dramatiq_message_rejects_total", ping_labels)] == 1
        assert samples[("dramatiq_message_duration_milliseconds_count", ping_labels)] == 5
        assert samples[("dramatiq_messages_inprogress", ping_labels)] == 0
        # Only the worker's own metrics: not the web's, which this process also imports.
        assert not any(name.startswith("edcrm_") for name, _ in samples)
    assert worker.process.returncode == 0, worker.describe()

    # A restart of the group starts from its own figures: the files of the stopped processes are gone.
    ping(env)
    with start_dramatiq(env, tmp_path / "dramatiq-2.log", processes=1, threads=2) as worker:
        samples = wait_for(
            lambda: (s := scrape(url)) and s.get(("dramatiq_messages_total", ping_labels)) == 1 and s,
            timeout=20,
            what="the restarted worker's metrics",
            watch=worker,
        )
        assert ("dramatiq_message_errors_total", ping_labels) not in samples


def test_the_web_processes_add_up_their_counts(env, tmp_path):
    port = free_port()
    env = env | {"PORT": str(port), "WEB_CONCURRENCY": "2", "TMPDIR": str(tmp_path)}
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with start_gunicorn(env, tmp_path / "gunicorn.log") as web:
        wait_for(lambda: scrape(f"{base}/metrics", headers), timeout=30, what="the web", watch=web)
        [metrics_dir] = tmp_path.glob("edcrm-web-metrics-*")  # made for this server by gunicorn.conf.py
        assert sorted(p.name.split("_")[0] for p in metrics_dir.glob("*.db"))  # the processes' files

        for _ in range(20):  # a connection each: both processes serve some
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
                assert answer.status == 200
        samples = scrape(f"{base}/metrics", headers)
        healthz = frozenset({"method": "GET", "endpoint": "health.healthz", "status": "200"}.items())
        assert samples[("edcrm_http_requests_total", healthz)] == 20
        assert samples[("edcrm_metrics_database_up", frozenset())] == 1
        assert ("edcrm_jobs", frozenset({"queue": "default", "state": "failed"}.items())) in samples

        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/metrics", timeout=5)
        refused.value.close()
        assert refused.value.code == 401
    assert not metrics_dir.exists()  # removed with the server
