"""The connection to the team's PostgreSQL and its schema (generated from the Structs)."""

from __future__ import annotations

from typing import Any

from ..config import SyncConfig, redact_url
from ..errors import SyncError
from ..schemas.postgres import SYNC_SCHEMA, ddl, fingerprint

__all__ = ["connect", "ensure_schema", "describe", "CONNECT_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 10
# Taken while migrating, so two machines meeting an empty database at once don't race their DDL.
_MIGRATE_LOCK = 0x636F6469  # "codi"


def describe(exc: BaseException, sync: SyncConfig) -> str:
    """One line saying why, without the password (libpq never prints it; we check anyway)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    from urllib.parse import unquote, urlsplit

    try:
        secret = urlsplit(sync.url).password
    except ValueError:
        secret = None
    if secret:
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return f"team database {redact_url(sync.url)}: {text}"


def connect(sync: SyncConfig) -> Any:
    """A psycopg connection (transactions explicit), or SyncError with the reason."""
    import psycopg

    try:
        return psycopg.connect(sync.url, connect_timeout=CONNECT_TIMEOUT_S, application_name="codi-queue")
    except psycopg.Error as exc:
        raise SyncError(describe(exc, sync)) from None


def ensure_schema(conn: Any) -> bool:
    """Bring the team database to this code's tables; True if anything was run.

    Cheap when it is already there (one read of the fingerprint), so every
    push calls it; ``sync migrate`` calls it on purpose.
    """
    want = fingerprint()
    with conn.transaction():
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{SYNC_SCHEMA}.schema_fingerprint",)
        ).fetchone()[0]
        if found and _fingerprint(conn) == want:
            return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        for statement in ddl():
            conn.execute(statement)
        conn.execute(
            f'INSERT INTO "{SYNC_SCHEMA}".schema_fingerprint (fingerprint) VALUES (%s) '
            "ON CONFLICT (singleton) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, migrated_at = now()",
            (want,),
        )
    return True


def _fingerprint(conn: Any) -> str | None:
    row = conn.execute(f'SELECT fingerprint FROM "{SYNC_SCHEMA}".schema_fingerprint').fetchone()
    return row[0] if row else None
