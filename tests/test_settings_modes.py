"""Settings come from the environment; bad values stop the process with a clear message."""

from __future__ import annotations

import secrets

from tests.processes import embedded_env, manage

PRODUCTION = {
    "SLUICE_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "sluice.example.com",
}


def test_production_mode_passes_the_deploy_checks(tmp_path):
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=embedded_env(tmp_path, **PRODUCTION)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_refuses_to_start_without_a_secret_key(tmp_path):
    env = embedded_env(tmp_path, **PRODUCTION)
    env.pop("SECRET_KEY")
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY is required when SLUICE_ENV=production" in result.stderr


def test_production_mode_refuses_a_weak_secret_key(tmp_path):
    result = manage("check", env=embedded_env(tmp_path, **{**PRODUCTION, "SECRET_KEY": "k" * 60}))
    assert "SECRET_KEY must be at least 50 characters with at least 5 different" in result.stderr


def test_production_mode_refuses_debug(tmp_path):
    result = manage("check", env=embedded_env(tmp_path, DEBUG="1", **PRODUCTION))
    assert "DEBUG must be off when SLUICE_ENV=production" in result.stderr


def test_a_database_url_that_is_not_postgres_is_refused(tmp_path):
    result = manage("check", env=embedded_env(tmp_path, DATABASE_URL="mysql://u:p@h/db"))
    assert result.returncode != 0
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_a_malformed_number_names_its_variable(tmp_path):
    result = manage("check", env=embedded_env(tmp_path, SLUICE_Q_WORKERS="lots"))
    assert "SLUICE_Q_WORKERS must be a whole number; got 'lots'" in result.stderr


def test_the_embedded_mode_uses_sqlite_in_wal_mode(tmp_path):
    env = embedded_env(tmp_path)
    assert manage("migrate", "--no-input", "-v", "0", env=env).returncode == 0
    result = manage(
        "shell",
        "-c",
        "from django.db import connection; c = connection.cursor();"
        "c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]);"
        "c.execute('PRAGMA synchronous'); print(c.fetchone()[0])",
        env=env,
    )
    assert result.stdout.split()[-2:] == ["wal", "1"], result.stdout + result.stderr
    assert (tmp_path / "sluice.sqlite3").exists()
