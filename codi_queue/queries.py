"""Read helpers for questions the tables answer with a join (readers, not the consumer)."""

from __future__ import annotations

from typing import Any

__all__ = ["skill_adoption"]


def skill_adoption(conn: Any, since: int | None = None) -> list[dict[str, Any]]:
    """Per skill: sessions it was suggested in, how many of those invoked it, and the rate.

    ``conn`` is an apsw or sqlite3 connection to the sessions database.
    """
    sql = (
        "SELECT s.skill, count(*) AS suggested, count(i.id) AS invoked "
        "FROM skill_suggestions AS s "
        "LEFT JOIN skill_invocations AS i ON i.session_id = s.session_id AND i.skill = s.skill "
        "WHERE s.timestamp >= ? GROUP BY s.skill ORDER BY s.skill"
    )
    rows = conn.execute(sql, (since or 0,)).fetchall()
    return [
        {"skill": skill, "suggested": suggested, "invoked": invoked, "rate": invoked / suggested if suggested else 0.0}
        for skill, suggested, invoked in rows
    ]
