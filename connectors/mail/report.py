"""What the mailer did, per partner, from its database (``boxbus mailer status``)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def partner_status(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("""
            SELECT o.partner,
                   count(*) FILTER (WHERE o.status = 'queued') AS queued,
                   count(*) FILTER (WHERE o.status = 'sent') AS sent,
                   count(*) FILTER (WHERE o.status = 'dead') AS dead,
                   count(*) FILTER (WHERE o.status = 'onboarded') AS onboarded,
                   CASE WHEN p.next_attempt_at > clock_timestamp()
                        THEN to_char(p.next_attempt_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS"Z"') END AS next_attempt_at,
                   p.last_error
            FROM mail_outgoing o LEFT JOIN mail_partners p ON p.partner = o.partner
            GROUP BY o.partner, p.next_attempt_at, p.last_error ORDER BY o.partner""")
    return [dict(r) for r in rows]
