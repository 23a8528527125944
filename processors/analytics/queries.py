"""The named, read-only queries of the analytics database: one definition answers the command
line (``boxbus analytics query NAME``), the HTTP API (``/api/NAME``) and the dashboard, so all
three show the same numbers.

Every query takes the same filters: ``by`` (the dimensions to group by, from the query's own
list), ``start``/``end`` (event time, start inclusive, end exclusive), ``regions`` and
``limit``. SQL is built only from the query's own fragments; values are always bound
parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from bus.errors import ConfigError


@dataclass(frozen=True)
class Filters:
    by: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    regions: tuple[str, ...] = ()
    limit: int | None = None
    below: Decimal = Decimal(10)  # low-stock: available units under this
    at: datetime | None = None  # receivables: ageing as of (default: now)


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    dimensions: Mapping[str, str]  # --by name -> SQL expression
    default_by: tuple[str, ...]
    build: Callable[[Query, Filters, list[Any]], str]  # SQL with $n bound in the list
    time_column: str | None = None  # what --from/--to filter

    def sql(self, filters: Filters) -> tuple[str, list[Any]]:
        unknown = [d for d in filters.by if d not in self.dimensions]
        if unknown:
            raise ConfigError(f"query {self.name} cannot group by {', '.join(unknown)}",
                              hint=f"--by takes {', '.join(self.dimensions) or 'nothing'} "
                              f"for {self.name}")
        args: list[Any] = []
        return self.build(self, filters, args), args

    def group(self, filters: Filters) -> list[tuple[str, str]]:
        return [(d, self.dimensions[d]) for d in (filters.by or self.default_by)]


def _where(query: Query, filters: Filters, args: list[Any], region: str = "region",
           extra: Sequence[str] = ()) -> str:
    clauses = list(extra)
    if query.time_column and filters.start:
        args.append(filters.start)
        clauses.append(f"{query.time_column} >= ${len(args)}")
    if query.time_column and filters.end:
        args.append(filters.end)
        clauses.append(f"{query.time_column} < ${len(args)}")
    if filters.regions:
        args.append(list(filters.regions))
        clauses.append(f"{region} = ANY(${len(args)}::text[])")
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def _select(query: Query, filters: Filters, keep: Sequence[str] = ()) -> tuple[str, str]:
    """The grouped columns (the dimensions asked for, then ``keep``: columns every row is
    split by, such as the currency), and their GROUP BY clause."""
    columns = [f"{sql} AS {name}" for name, sql in query.group(filters)] + list(keep)
    dims = "".join(f"{c}, " for c in columns)
    return dims, (f" GROUP BY {', '.join(str(i) for i in range(1, len(columns) + 1))}"
                  if columns else "")


def _limit(filters: Filters, args: list[Any]) -> str:
    if filters.limit is None:
        return ""
    args.append(filters.limit)
    return f" LIMIT ${len(args)}"


def _sales(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters, keep=("currency",))
    by = filters.by or query.default_by
    table = "agg_sales_hourly" if {"hour", "store"} & set(by) or _sub_day(filters) \
        else "agg_sales_daily"
    return (f"SELECT {dims}sum(orders)::bigint AS orders, "
            "sum(revenue_minor)::bigint AS revenue_minor, sum(units) AS units, "
            "CASE WHEN sum(orders) > 0 THEN round(sum(revenue_minor) / sum(orders)) END "
            "AS avg_basket_minor, sum(late_events)::bigint AS late_events "
            f"FROM {table}{_where(query, filters, args)}{group} "
            f"ORDER BY revenue_minor DESC{_limit(filters, args)}")


def _day(moment: datetime | None, *, up: bool) -> datetime | None:
    """The UTC day a moment falls in (``up``: the next day's start, unless at midnight)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1) if up and day != moment else day


def _sub_day(filters: Filters) -> bool:
    """A range that does not fall on whole UTC days needs the hourly table."""
    return any(t is not None and t.astimezone(UTC).time() != time(0)
               for t in (filters.start, filters.end))


def _products(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters, keep=("currency",))
    filters = replace(filters, start=_day(filters.start, up=False),
                      end=_day(filters.end, up=True))  # the table is by whole UTC days
    return (f"SELECT {dims}sum(lines)::bigint AS lines, sum(units) AS units, "
            "sum(net_minor)::bigint AS net_minor "
            f"FROM agg_product_daily{_where(query, filters, args)}{group} "
            f"ORDER BY net_minor DESC, units DESC{_limit(filters, args)}")


_FUNNEL_BASE = """
    SELECT p.*, s.dispatched_at, s.received_at, s.received_units
    FROM agg_purchase_orders p LEFT JOIN (
        SELECT order_id, min(dispatched_at) AS dispatched_at, min(received_at) AS received_at,
               sum(received_units) AS received_units
        FROM agg_shipments GROUP BY order_id) s USING (order_id)
    WHERE p.placed_at IS NOT NULL"""


def _hours(a: str, b: str, share: float) -> str:
    return (f"round((percentile_cont({share}) WITHIN GROUP (ORDER BY "
            f"extract(epoch FROM {b} - {a}) / 3600))::numeric, 1)")


def _funnel(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters)
    return (f"SELECT {dims}count(*) AS placed, count(confirmed_at) AS confirmed, "
            "count(dispatched_at) AS dispatched, count(received_at) AS received, "
            "count(cancelled_at) AS cancelled, "
            f"{_hours('placed_at', 'confirmed_at', 0.5)} AS confirm_p50_h, "
            f"{_hours('placed_at', 'confirmed_at', 0.9)} AS confirm_p90_h, "
            f"{_hours('placed_at', 'dispatched_at', 0.5)} AS dispatch_p50_h, "
            f"{_hours('placed_at', 'dispatched_at', 0.9)} AS dispatch_p90_h, "
            f"{_hours('placed_at', 'received_at', 0.5)} AS receive_p50_h, "
            f"{_hours('placed_at', 'received_at', 0.9)} AS receive_p90_h, "
            "round(sum(received_units) FILTER (WHERE received_at IS NOT NULL) / "
            "nullif(sum(ordered_units) FILTER (WHERE received_at IS NOT NULL), 0), 4) "
            f"AS fill_rate FROM ({_FUNNEL_BASE}) f{_where(query, filters, args)}{group} "
            f"ORDER BY placed DESC{_limit(filters, args)}")


def _stock(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters)
    args.append(filters.below)
    below = f"${len(args)}"
    return (f"SELECT {dims}count(*) AS articles, sum(on_hand) AS on_hand, "
            "sum(reserved) AS reserved, sum(in_transit) AS in_transit, "
            "sum(on_hand - reserved) AS available, "
            f"count(*) FILTER (WHERE on_hand - reserved < {below}) AS low "
            f"FROM agg_stock{_where(query, filters, args)}{group} "
            f"ORDER BY on_hand DESC{_limit(filters, args)}")


def _low_stock(query: Query, filters: Filters, args: list[Any]) -> str:
    args.append(filters.below)
    below = f"on_hand - reserved < ${len(args)}"
    return ("SELECT box, warehouse, sku, unit, region, on_hand, reserved, in_transit, "
            "on_hand - reserved AS available, occurred_at AS as_of FROM agg_stock"
            f"{_where(query, filters, args, extra=[below])} "
            f"ORDER BY available, box, warehouse, sku{_limit(filters, args)}")


def _receivables(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters, keep=("currency",))
    args.append(filters.at or datetime.now(UTC))
    at = f"${len(args)}::timestamptz"
    # Days past due as of `at`, rounded up: overdue from the moment the due time passes
    # (1 day overdue for the first 24 hours), not due until then.
    overdue = f"ceil(extract(epoch FROM {at} - due_at) / 86400)"

    def ageing(low: int | None, high: int | None) -> str:
        cond = " AND ".join([*([f"{overdue} > {low}"] if low is not None else []),
                             *([f"{overdue} <= {high}"] if high is not None else [])])
        return f"coalesce(sum(open_minor) FILTER (WHERE {cond}), 0)::bigint"

    return (f"SELECT {dims}count(*) AS invoices, "
            "sum(total_minor)::bigint AS invoiced_minor, sum(paid_minor)::bigint AS paid_minor, "
            "sum(open_minor)::bigint AS open_minor, "
            f"{ageing(None, 0)} AS not_due_minor, {ageing(0, 30)} AS overdue_1_30_minor, "
            f"{ageing(30, 60)} AS overdue_31_60_minor, {ageing(60, 90)} AS overdue_61_90_minor, "
            f"{ageing(90, None)} AS overdue_90_plus_minor FROM ("
            "SELECT i.*, coalesce(i.buyer, po.buyer, '?') AS partner, "
            "coalesce(p.paid, 0) AS paid_minor, i.total_minor - coalesce(p.paid, 0) "
            "AS open_minor FROM agg_invoices i LEFT JOIN (SELECT invoice_id, "
            f"sum(amount_minor) AS paid FROM agg_payments WHERE paid_at <= {at} "
            "GROUP BY invoice_id) p USING (invoice_id) "
            f"LEFT JOIN agg_purchase_orders po USING (order_id) WHERE i.issued_at <= {at}) r"
            f"{_where(query, filters, args)}{group} "
            f"ORDER BY open_minor DESC{_limit(filters, args)}")


def _reports(query: Query, filters: Filters, args: list[Any]) -> str:
    return ("SELECT r.report_id, r.branch, r.region, r.period_start, r.period_end, "
            "r.orders_count AS reported_orders, r.revenue_minor AS reported_revenue_minor, "
            "r.currency, r.stock_value_minor, "
            "coalesce(a.orders, 0) AS aggregated_orders, "
            "coalesce(a.revenue_minor, 0) AS aggregated_revenue_minor "
            "FROM agg_branch_reports r LEFT JOIN LATERAL ("
            "SELECT sum(orders)::bigint AS orders, sum(revenue_minor)::bigint AS revenue_minor "
            "FROM agg_sales_hourly s WHERE s.box = r.branch AND s.currency = r.currency "
            "AND s.bucket >= r.period_start AND s.bucket < r.period_end) a ON true"
            f"{_where(query, filters, args, region='r.region')} "
            f"ORDER BY r.period_start DESC, r.branch{_limit(filters, args)}")


def _events(query: Query, filters: Filters, args: list[Any]) -> str:
    dims, group = _select(query, filters)
    return (f"SELECT {dims}sum(records)::bigint AS records, sum(late)::bigint AS late "
            f"FROM agg_events_hourly{_where(query, filters, args)}{group} "
            f"ORDER BY records DESC{_limit(filters, args)}")


def _positions(query: Query, filters: Filters, args: list[Any]) -> str:
    return ("SELECT consumer, topic, partition, next_offset, epoch, updated_at, "
            "(SELECT to_timestamp(max(value::bigint) / 1000.0) FROM "
            "jsonb_each_text(watermarks)) AS newest_event_time "
            "FROM agg_positions ORDER BY consumer, topic, partition")


_PLACE = {"region": "region", "branch": "box", "store": "store"}
_TIME = {"hour": "bucket", "day": "date_trunc('day', bucket, 'UTC')"}

QUERIES: dict[str, Query] = {q.name: q for q in (
    Query("sales", "Sales", "Store orders taken by the branches: orders, revenue (tax "
          "included), units, average basket, and events that came late.",
          {**_PLACE, **_TIME}, ("region",), _sales, "bucket"),
    Query("products", "Top products", "Articles of the store orders by net line value "
          "(quantity times unit price), the best first; by whole UTC days (--from/--to are "
          "taken to the day).",
          {"sku": "sku", "region": "region", "branch": "box", "day": "bucket"}, ("sku",),
          _products, "bucket"),
    Query("funnel", "Purchase-order funnel", "Purchase orders placed, confirmed, "
          "dispatched, received and cancelled; p50/p90 hours from placement to each step; "
          "fill rate (units received / units ordered, of the received orders).",
          {"region": "region", "buyer": "buyer", "supplier": "supplier",
           "day": "date_trunc('day', placed_at, 'UTC')"}, (), _funnel, "placed_at"),
    Query("stock", "Stock", "Stock by warehouse: articles, on hand, reserved, in transit, "
          "available, and how many articles are low (available under --below).",
          {"warehouse": "warehouse", "box": "box", "region": "region", "sku": "sku"},
          ("box", "warehouse"), _stock),
    Query("low-stock", "Low stock", "Articles whose available stock (on hand minus "
          "reserved) is under --below, the lowest first.", {}, (), _low_stock),
    Query("receivables", "Receivables", "Invoiced minus paid per supplier and partner, "
          "with ageing by days past due, as of --at (default now): invoices issued and "
          "payments made by then.",
          {"supplier": "supplier", "partner": "partner", "region": "region"},
          ("supplier", "partner"), _receivables, "issued_at"),
    Query("branch-reports", "Branch reports", "The branches' reports as sent, beside what "
          "the aggregates hold for the same branch and period.", {}, (), _reports,
          "period_start"),
    Query("events", "Events", "Records of each event type by the hour of their event time, "
          "and how many came late.",
          {"type": "type", "region": "region", **_TIME}, ("type",), _events, "bucket"),
    Query("positions", "Positions", "Where the aggregator is in each region partition.",
          {}, (), _positions),
)}


def query_named(name: str) -> Query:
    try:
        return QUERIES[name]
    except KeyError:
        raise ConfigError(f"no analytics query named {name!r}",
                          hint=f"the queries are: {', '.join(QUERIES)}") from None


def moment(text: str, what: str) -> datetime:
    """A --from/--to value: a date (midnight UTC) or an ISO date and time (UTC if no zone)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), UTC)
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a date or a date and time",
                          hint="write 2026-11-23 or 2026-11-23T14:00 (UTC unless a zone "
                          "is given, e.g. 2026-11-23T14:00+01:00)") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


async def run(conn: asyncpg.Connection, name: str, filters: Filters) -> dict[str, Any]:
    """The query's answer, as plain JSON-able values: its rows and their columns."""
    query = query_named(name)
    sql, args = query.sql(filters)
    try:
        rows = await conn.fetch(sql, *args)
    except asyncpg.UndefinedTableError:
        raise ConfigError("the analytics database has no aggregates yet",
                          hint="run `boxbus aggregator run` against it first") from None
    columns = list(rows[0].keys()) if rows else []
    return {
        "query": name, "title": query.title, "description": query.description,
        "by": list(filters.by or query.default_by),
        "from": filters.start.isoformat() if filters.start else None,
        "to": filters.end.isoformat() if filters.end else None,
        "regions": list(filters.regions), "columns": columns,
        "rows": [{k: _plain(v) for k, v in row.items()} for row in rows]}
