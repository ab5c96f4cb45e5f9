// The meterstream dashboard. Reads the gateway's Stripe-compatible API (meters, event summaries) and
// its /dashboard/api endpoints (customers, top customers, pipeline); refreshes every few seconds.
// Query parameters: ?refresh=<seconds> (default 5), ?meter=<id>, ?customer=<id>.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);
  const refreshSeconds = Math.max(1, Number(params.get("refresh")) || 5);
  const HOUR = 3600;
  const DAY = 86400;
  const state = { meters: [], meter: params.get("meter"), customer: params.get("customer"), previous: null, busy: false, usageGeneration: 0 };

  const { allMeters, call: api, fmt, row } = window.meterstream; // common.js

  function utc(ts, withTime) {
    const iso = new Date(ts * 1000).toISOString();
    return withTime ? iso.slice(0, 16).replace("T", " ") : iso.slice(0, 10);
  }

  function setRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function showError(where, err) {
    where.textContent = `error: ${err.message}`;
  }

  // ---- meters ----------------------------------------------------------------------------------
  async function loadMeters() {
    const meters = await allMeters();
    state.meters = meters;
    $("#meters-empty").hidden = meters.length > 0;
    setRows($("#meters tbody"), meters.map((m) => {
      const tr = row([m.display_name, m.event_name, m.default_aggregation.formula, m.event_time_window || "raw", m.status, m.id]);
      tr.dataset.meter = m.id;
      if (m.id === state.meter) tr.classList.add("selected");
      tr.addEventListener("click", () => selectMeter(m.id));
      return tr;
    }));
    const select = $("#meter");
    const keep = state.meter && meters.some((m) => m.id === state.meter) ? state.meter : (meters[0] && meters[0].id);
    select.replaceChildren(...meters.map((m) => new Option(`${m.display_name} (${m.event_name})`, m.id)));
    state.meter = keep || null;
    if (state.meter) select.value = state.meter;
  }

  async function selectMeter(id) {
    state.meter = id;
    state.topLimit = 10;
    $("#meter").value = id;
    document.querySelectorAll("#meters tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.meter === id));
    state.customer = null;
    await loadCustomers();
    await Promise.all([loadUsage(), loadTop()]);
  }

  // ---- customers -------------------------------------------------------------------------------
  async function loadCustomers() {
    const select = $("#customer");
    if (!state.meter) {
      select.replaceChildren();
      return;
    }
    const list = await api(`/dashboard/api/customers?meter=${encodeURIComponent(state.meter)}&limit=500`);
    const ids = list.data.map((c) => c.customer);
    if (state.customer && !ids.includes(state.customer)) ids.unshift(state.customer);
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (!state.customer || !ids.includes(state.customer)) state.customer = ids[0] || null;
    if (state.customer) select.value = state.customer;
  }

  // ---- usage chart -----------------------------------------------------------------------------
  async function loadUsage() {
    const chart = $("#chart");
    const tbody = $("#usage-table tbody");
    if (!state.meter || !state.customer) {
      chart.replaceChildren();
      chart.dataset.state = "empty";
      $("#usage-total").textContent = state.meter ? "No customer has usage on this meter yet." : "";
      setRows(tbody, []);
      return;
    }
    // Only the latest call draws: a slower, older one (say from the refresh timer, for the customer
    // picked before) must not overwrite what the user just chose.
    const generation = ++state.usageGeneration;
    const customer = state.customer;
    const meter = state.meter;
    const grouping = $("#grouping").value;
    const width = grouping === "hour" ? HOUR : DAY;
    const count = grouping === "hour" ? 48 : 30;
    const now = Math.floor(Date.now() / 1000);
    const end = (Math.floor(now / width) + 1) * width;
    const start = end - count * width;
    const values = new Map();
    let after = null;
    for (let page = 0; page < 10; page++) {
      const q = new URLSearchParams({
        customer, start_time: String(start), end_time: String(end), value_grouping_window: grouping, limit: "100",
      });
      if (after) q.set("starting_after", after);
      const list = await api(`/v1/billing/meters/${encodeURIComponent(meter)}/event_summaries?${q}`);
      for (const s of list.data) values.set(s.start_time, s.aggregated_value);
      if (!list.has_more || !list.data.length) break;
      after = list.data[list.data.length - 1].id;
    }
    if (generation !== state.usageGeneration) return;
    if (!values.size) {
      // Nothing at all for this customer in the window: say so instead of an empty chart with made-up ticks.
      chart.replaceChildren();
      chart.dataset.state = "empty";
      chart.dataset.customer = customer;
      chart.dataset.grouping = grouping;
      $("#usage-total").textContent = `No usage of this meter by ${customer} in the last ${count} ${grouping === "hour" ? "hours" : "days"}` +
        " (check the id, or the events explorer for rejected events).";
      setRows(tbody, []);
      return;
    }
    const points = [];
    let total = 0n;
    for (let t = start; t < end; t += width) {
      const v = values.has(t) ? values.get(t) : 0;
      const exact = typeof v === "bigint" ? v : BigInt(Math.trunc(Number(v)));
      total += exact;
      points.push({ start: t, value: Number(v), text: exact.toString() });
    }
    window.MeterCharts.drawBars(chart, points, {
      label: `usage of ${customer}`,
      format: (t) => utc(t, grouping === "hour"),
    });
    chart.dataset.state = "drawn";
    chart.dataset.customer = customer;
    chart.dataset.grouping = grouping;
    $("#usage-total").textContent = `${customer}: total ${fmt(total)} over ${count} ${grouping === "hour" ? "hours" : "days"}`;
    setRows(tbody, points.filter((p) => p.text !== "0").reverse().map((p) => row([utc(p.start, true), p.text], [null, "num"])));
  }

  // ---- top customers ---------------------------------------------------------------------------
  async function loadTop() {
    const tbody = $("#top tbody");
    if (!state.meter) {
      setRows(tbody, []);
      return;
    }
    const input = $("#top-day");
    if (!input.value) input.value = utc(Math.floor(Date.now() / 1000));
    const day = Math.floor(Date.parse(input.value + "T00:00:00Z") / 1000);
    const meter = state.meters.find((m) => m.id === state.meter);
    $("#top-meter").textContent = meter ? `${meter.display_name} (${meter.event_name})` : state.meter;
    const limit = state.topLimit || 10;
    // one more than shown, to know whether there is more (the endpoint answers at most 100)
    const top = await api(`/dashboard/api/top?meter=${encodeURIComponent(state.meter)}&day=${day}&limit=${Math.min(limit + 1, 100)}`);
    const more = top.data.length > limit;
    setRows(tbody, top.data.slice(0, limit).map((c, i) => row([String(i + 1), c.customer, fmt(c.value)], [null, null, "num"])));
    $("#top-more").hidden = !more;
    $("#top-note").textContent = top.data.length
      ? (top.truncated ? `Scanned the ${fmt(top.customers_scanned)} most recently active customers.` : "")
      : "No usage on that day.";
  }

  // ---- pipeline --------------------------------------------------------------------------------
  function sumFields(obj, test) {
    let total = 0;
    for (const [k, v] of Object.entries(obj)) if (test(k)) total += Number(v);
    return total;
  }

  async function loadPipeline() {
    const p = await api("/dashboard/api/pipeline");
    const pill = $("#health");
    pill.dataset.status = p.health.status;
    pill.textContent = p.health.status === "ok" ? "healthy" : "degraded";
    setRows($("#services tbody"), [
      row(["Kafka", p.health.kafka.ok ? "reachable" : `unreachable: ${p.health.kafka.error || ""}`]),
      row(["Redis", p.health.redis.ok ? "reachable" : `unreachable: ${p.health.redis.error || ""}`]),
      row(["Gateway records awaiting Kafka", String(p.gateway.in_flight)]),
    ]);
    const proc = p.processor;
    const processed = sumFields(proc, (k) => k.startsWith("event:") || k.startsWith("cancel:") || k.startsWith("rejected:"));
    if (state.previous && p.time > state.previous.time) {
      const rate = (processed - state.previous.processed) / (p.time - state.previous.time);
      $("#rate").textContent = fmt(Math.max(0, Math.round(rate)));
    }
    state.previous = { time: p.time, processed };
    $("#accepted").textContent = fmt(proc["event:new"] || 0);
    $("#duplicates").textContent = fmt(proc["event:dup"] || 0);
    $("#rejected").textContent = fmt(sumFields(proc, (k) => k.startsWith("rejected:")));
    const rejects = Object.entries(proc).filter(([k]) => k.startsWith("rejected:")).sort((a, b) => b[1] - a[1]);
    setRows($("#rejects tbody"), rejects.map(([k, v]) => row([k.slice("rejected:".length), fmt(v)], [null, "num"])));
    const sink = p.sink;
    $("#sink-delivered").textContent = fmt(sumFields(sink, (k) => k.startsWith("delivered:")));
    $("#sink-retried").textContent = fmt(sumFields(sink, (k) => k.startsWith("retried:")));
    $("#sink-dead").textContent = fmt(sumFields(sink, (k) => k.startsWith("dead_lettered:")));
    // Processor and sink lag apart: they are different consumers, and one being behind says nothing about the other.
    const sinkTopics = new Set(["meter-events-accepted"]);
    const lagOf = (test) => p.lag.filter(test).reduce((a, r) => a + r.lag, 0);
    $("#lag").textContent = p.lag.length ? fmt(lagOf((r) => !sinkTopics.has(r.topic))) : "unknown";
    $("#sink-lag").textContent = p.lag.length ? fmt(lagOf((r) => sinkTopics.has(r.topic))) : "unknown";
    const byTopic = new Map();
    for (const r of p.lag) {
      const key = `${r.group}\u0000${r.topic}`;
      const acc = byTopic.get(key) || { group: r.group, topic: r.topic, partitions: 0, lag: 0 };
      acc.partitions += 1;
      acc.lag += r.lag;
      byTopic.set(key, acc);
    }
    setRows($("#lag-table tbody"), [...byTopic.values()].map((r) => row([r.group, r.topic, String(r.partitions), fmt(r.lag)], [null, null, "num", "num"])));
  }

  // ---- refresh loop ----------------------------------------------------------------------------
  async function refresh(full) {
    if (state.busy) return;
    state.busy = true;
    try {
      const tasks = [loadPipeline().catch((e) => showError($("#health"), e))];
      if (full) {
        await loadMeters();
        await loadCustomers();
      }
      tasks.push(loadUsage().catch((e) => showError($("#usage-total"), e)));
      tasks.push(loadTop().catch((e) => showError($("#top-note"), e)));
      await Promise.all(tasks);
      const stamp = $("#refreshed");
      stamp.dataset.count = String(Number(stamp.dataset.count) + 1);
      stamp.textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    } catch (e) {
      showError($("#refreshed"), e);
    } finally {
      state.busy = false;
    }
  }

  function wire() {
    $("#meter").addEventListener("change", (e) => selectMeter(e.target.value));
    $("#customer").addEventListener("change", (e) => {
      state.customer = e.target.value;
      $("#customer-id").value = "";
      loadUsage().catch((err) => showError($("#usage-total"), err));
    });
    $("#customer-id").addEventListener("change", (e) => {
      const id = e.target.value.trim();
      if (!id) return;
      state.customer = id;
      loadCustomers().then(loadUsage).catch((err) => showError($("#usage-total"), err));
    });
    $("#grouping").addEventListener("change", () => loadUsage().catch((err) => showError($("#usage-total"), err)));
    $("#top-day").addEventListener("change", () => loadTop().catch((err) => showError($("#top-note"), err)));
    $("#top-more").addEventListener("click", () => {
      state.topLimit = 100;
      loadTop().catch((err) => showError($("#top-note"), err));
    });
    // the operator tools (ops.js) changed the registry: list the meters again now, not at the next full refresh
    document.addEventListener("meters-changed", () => loadMeters().catch((err) => showError($("#refreshed"), err)));
    let ticks = 0;
    setInterval(() => {
      if (!$("#live").checked) return;
      ticks += 1;
      refresh(ticks % 6 === 0);
    }, refreshSeconds * 1000);
    refresh(true);
  }

  wire();
})();
