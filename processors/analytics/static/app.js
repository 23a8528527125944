// The central analytics dashboard: reads the read-only API of `boxbus analytics serve`,
// draws the charts with the vendored Chart.js, and reloads its numbers when the server says
// the aggregator committed (server-sent events), so it never shows an uncommitted number.
"use strict";

const state = { charts: {}, refreshes: 0, pending: null, busy: false };
window.boxbus = state;

const $ = (id) => document.getElementById(id);
const fmtInt = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const fmtNum = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

function money(minor, currency) {
  if (minor === null || minor === undefined) return "–";
  return `${fmtNum.format(minor / 100)} ${currency || ""}`.trim();
}

function params(extra) {
  const q = new URLSearchParams(extra || {});
  const region = $("region").value;
  if (region) q.append("region", region);
  if ($("from").value) q.set("from", $("from").value);
  if ($("to").value) {  // the page's "to" day is included: the API's end is exclusive
    const end = new Date(`${$("to").value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    q.set("to", end.toISOString().slice(0, 10));
  }
  return q;
}

async function query(name, extra) {
  const response = await fetch(`/api/${name}?${params(extra)}`, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(`${name}: ${body.error} (${body.hint || ""})`);
  return body;
}

function table(id, rows, columns) {
  const el = $(id);
  el.replaceChildren();
  const head = el.createTHead().insertRow();
  for (const [title, , kind] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    if (kind === "text") th.className = "text";
    head.appendChild(th);
  }
  const body = el.createTBody();
  if (!rows.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = columns.length;
    cell.className = "empty";
    cell.textContent = "nothing yet";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const [, value, kind] of columns) {
      const td = tr.insertCell();
      const v = typeof value === "function" ? value(row) : row[value];
      td.textContent = v === null || v === undefined ? "–" : String(v);
      if (kind === "text") td.className = "text";
    }
  }
}

function chart(id, type, labels, datasets, options) {
  const existing = state.charts[id];
  if (existing) {
    existing.data.labels = labels;
    existing.data.datasets.forEach((d, i) => { d.data = datasets[i].data; });
    existing.update("none");
    return existing;
  }
  state.charts[id] = new Chart($(id), {
    type, data: { labels, datasets },
    options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: false,
                             plugins: { legend: { display: datasets.length > 1 } } }, options || {}),
  });
  return state.charts[id];
}

function totals(rows) {
  // Sales rows are per region and currency: the totals are per currency.
  const byCurrency = new Map();
  for (const r of rows) {
    const t = byCurrency.get(r.currency) || { orders: 0, revenue: 0, units: 0, late: 0 };
    t.orders += r.orders; t.revenue += r.revenue_minor; t.units += Number(r.units);
    t.late += r.late_events;
    byCurrency.set(r.currency, t);
  }
  return byCurrency;
}

async function refresh() {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try {
    const [byRegion, byHour, byBranch, products, funnel, receivables, low, stock, reports] =
      await Promise.all([
        query("sales", { by: "region" }), query("sales", { by: "hour" }),
        query("sales", { by: "branch", limit: 20 }), query("products", { by: "sku", limit: 10 }),
        query("funnel"), query("receivables", { limit: 10 }), query("low-stock", { limit: 15 }),
        query("stock", { by: "warehouse", limit: 10 }), query("branch-reports", { limit: 10 })]);

    const sums = totals(byRegion.rows);
    const orders = [...sums.values()].reduce((a, t) => a + t.orders, 0);
    const revenue = [...sums.entries()].map(([c, t]) => money(t.revenue, c));
    const minor = [...sums.values()].reduce((a, t) => a + t.revenue, 0);
    $("total-orders").textContent = fmtInt.format(orders);
    $("total-orders").dataset.value = String(orders);
    $("total-revenue").textContent = revenue.join(" · ") || "–";
    $("total-revenue").dataset.value = String(minor);
    $("avg-basket").textContent = [...sums.entries()]
      .map(([c, t]) => (t.orders ? money(Math.round(t.revenue / t.orders), c) : "–")).join(" · ") || "–";
    $("total-units").textContent = fmtNum.format([...sums.values()].reduce((a, t) => a + t.units, 0));
    $("late-events").textContent = fmtInt.format([...sums.values()].reduce((a, t) => a + t.late, 0));

    const hours = byHour.rows.slice().sort((a, b) => (a.hour < b.hour ? -1 : 1));
    chart("chart-hourly", "line", hours.map((r) => r.hour.slice(5, 16).replace("T", " ")),
          [{ label: "revenue", data: hours.map((r) => r.revenue_minor / 100),
             borderColor: "#2a6fdb", backgroundColor: "#2a6fdb",
             pointRadius: hours.length < 48 ? 3 : 0, tension: 0.2 }],
          { scales: { y: { beginAtZero: true } } });
    const regions = byRegion.rows.slice().sort((a, b) => (a.region < b.region ? -1 : 1));
    chart("chart-regions", "bar", regions.map((r) => `${r.region} (${r.currency})`),
          [{ label: "revenue", data: regions.map((r) => r.revenue_minor / 100),
             backgroundColor: "#2a6fdb" }]);
    chart("chart-products", "bar", products.rows.map((r) => r.sku),
          [{ label: "net value", data: products.rows.map((r) => r.net_minor / 100),
             backgroundColor: "#3aa17e" }], { indexAxis: "y" });
    const f = funnel.rows[0] || {};
    chart("chart-funnel", "bar", ["placed", "confirmed", "dispatched", "received", "cancelled"],
          [{ label: "purchase orders",
             data: [f.placed || 0, f.confirmed || 0, f.dispatched || 0, f.received || 0, f.cancelled || 0],
             backgroundColor: "#d9822b" }]);

    table("table-branches", byBranch.rows, [
      ["branch", "branch", "text"], ["orders", (r) => fmtInt.format(r.orders)],
      ["revenue", (r) => money(r.revenue_minor, r.currency)],
      ["avg basket", (r) => money(r.avg_basket_minor, r.currency)], ["late", "late_events"]]);
    table("table-funnel", funnel.rows.filter((r) => r.placed), [
      ["placed", "placed"], ["confirm p50/p90", (r) => `${r.confirm_p50_h ?? "–"} / ${r.confirm_p90_h ?? "–"}`],
      ["dispatch p50/p90", (r) => `${r.dispatch_p50_h ?? "–"} / ${r.dispatch_p90_h ?? "–"}`],
      ["receive p50/p90", (r) => `${r.receive_p50_h ?? "–"} / ${r.receive_p90_h ?? "–"}`],
      ["fill rate", (r) => (r.fill_rate === null ? "–" : `${(r.fill_rate * 100).toFixed(1)} %`)]]);
    table("table-receivables", receivables.rows, [
      ["supplier", "supplier", "text"], ["partner", "partner", "text"],
      ["open", (r) => money(r.open_minor, r.currency)], ["not due", (r) => money(r.not_due_minor, r.currency)],
      ["1–30", (r) => money(r.overdue_1_30_minor, r.currency)], ["31–60", (r) => money(r.overdue_31_60_minor, r.currency)],
      ["> 60", (r) => money(r.overdue_61_90_minor + r.overdue_90_plus_minor, r.currency)]]);
    table("table-low-stock", low.rows, [
      ["box", "box", "text"], ["warehouse", "warehouse", "text"], ["article", "sku", "text"],
      ["available", "available"], ["on hand", "on_hand"], ["reserved", "reserved"]]);
    table("table-stock", stock.rows, [
      ["warehouse", "warehouse", "text"], ["articles", "articles"], ["on hand", (r) => fmtNum.format(r.on_hand)],
      ["available", (r) => fmtNum.format(r.available)], ["low", "low"]]);
    table("table-reports", reports.rows, [
      ["branch", "branch", "text"], ["day", (r) => r.period_start.slice(0, 10), "text"],
      ["orders sent / aggregated", (r) => `${r.reported_orders} / ${r.aggregated_orders}`],
      ["revenue sent", (r) => money(r.reported_revenue_minor, r.currency)],
      ["revenue aggregated", (r) => money(r.aggregated_revenue_minor, r.currency)]]);

    if ($("region").options.length === 1) {
      for (const r of regions) {
        if ([...$("region").options].some((o) => o.value === r.region)) continue;
        const option = document.createElement("option");
        option.value = option.textContent = r.region;
        $("region").appendChild(option);
      }
    }
    state.refreshes += 1;
    $("status").textContent = `updated ${new Date().toLocaleTimeString()} · ${state.refreshes} refreshes`;
  } catch (error) {
    $("status").textContent = `could not load: ${error.message}`;
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function listen() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    $("live").dataset.state = "live";
    $("live").textContent = "live";
  });
  source.addEventListener("commit", () => refresh());
  source.addEventListener("error", () => {
    $("live").dataset.state = "down";
    $("live").textContent = "reconnecting…";
  });
  state.source = source;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["region", "from", "to"]) $(id).addEventListener("change", () => refresh());
  $("clear").addEventListener("click", () => { $("from").value = ""; $("to").value = ""; refresh(); });
  refresh();
  listen();
});
