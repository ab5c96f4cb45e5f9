// The dashboard's operator tools, beside app.js: meters created, renamed, deactivated and reactivated
// through the gateway's Stripe-compatible meter API (the registry behind it; the API key is the page's login,
// and the gateway refuses requests from other sites, so no other page can drive these buttons), a customer
// page (every meter over a chosen range, by hour or day), and CSV export of any table.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const HOUR = 3600;
  const DAY = 86400;

  const { allMeters, call, row } = window.meterstream; // common.js

  function post(path, fields) {
    return call(path, { method: "POST", body: new URLSearchParams(fields).toString() });
  }

  // ---- meters: create, rename, deactivate, reactivate --------------------------------------------
  function say(text, isError) {
    const el = $("#meter-message");
    el.textContent = text;
    el.className = isError ? "error" : "muted";
  }

  async function fillMeterPicker() {
    const meters = await allMeters();
    const select = $("#edit-meter");
    const keep = select.value;
    select.replaceChildren(...meters.map((m) => new Option(`${m.display_name} (${m.event_name}, ${m.status})`, m.id)));
    if (keep && meters.some((m) => m.id === keep)) select.value = keep;
    return meters;
  }

  async function act(work, done) {
    try {
      const meter = await work();
      say(done(meter));
      await fillMeterPicker();
      document.dispatchEvent(new CustomEvent("meters-changed"));
    } catch (err) {
      say(err.message, true);
    }
  }

  function createMeter(event) {
    event.preventDefault();
    const fields = {
      display_name: $("#new-display-name").value.trim(),
      event_name: $("#new-event-name").value.trim(),
      "default_aggregation[formula]": $("#new-formula").value,
    };
    const customerKey = $("#new-customer-key").value.trim();
    if (customerKey) {
      fields["customer_mapping[event_payload_key]"] = customerKey;
      fields["customer_mapping[type]"] = "by_id";
    }
    const valueKey = $("#new-value-key").value.trim();
    if (valueKey) fields["value_settings[event_payload_key]"] = valueKey;
    act(() => post("/v1/billing/meters", fields), (m) => `Created ${m.id} for event_name ${m.event_name}.`).then(() => {
      $("#new-meter").reset();
    });
  }

  function selected() {
    const id = $("#edit-meter").value;
    if (!id) throw new Error("pick a meter first");
    return encodeURIComponent(id);
  }

  function rename() {
    const name = $("#edit-display-name").value.trim();
    act(() => post(`/v1/billing/meters/${selected()}`, { display_name: name }), (m) => `Renamed ${m.id} to "${m.display_name}".`);
  }

  function setStatus(action) {
    act(() => post(`/v1/billing/meters/${selected()}/${action}`, {}), (m) => `${m.id} is ${m.status} now.`);
  }

  // ---- customer page ------------------------------------------------------------------------------
  function dateInput(el, ts) {
    el.value = new Date(ts * 1000).toISOString().slice(0, 10);
  }

  async function showCustomer(event) {
    if (event) event.preventDefault();
    const customer = $("#cust-id").value.trim();
    const grouping = $("#cust-group").value;
    const note = $("#cust-note");
    const table = $("#cust-table tbody");
    const buckets = $("#cust-buckets tbody");
    if (!customer) {
      note.textContent = "Enter a customer id.";
      return;
    }
    const start = Math.floor(Date.parse($("#cust-from").value + "T00:00:00Z") / 1000);
    const end = Math.floor(Date.parse($("#cust-to").value + "T00:00:00Z") / 1000) + DAY; // "to" is inclusive
    const width = grouping === "hour" ? HOUR : DAY;
    const windows = (end - start) / width;
    if (!(end > start)) {
      note.textContent = "The range is empty: \"to\" must be on or after \"from\".";
      return;
    }
    if (windows > (grouping === "hour" ? 24 * 7 : 93)) {
      note.textContent = grouping === "hour" ? "Hourly: at most 7 days." : "Daily: at most 93 days.";
      return;
    }
    note.textContent = "Loading…";
    const meters = await allMeters();
    const rows = [];
    const nonZero = [];
    for (const m of meters) {
      const values = new Map();
      let after = null;
      try {
        for (let page = 0; page < 10; page++) {
          const q = new URLSearchParams({ customer, start_time: String(start), end_time: String(end), value_grouping_window: grouping, limit: "100" });
          if (after) q.set("starting_after", after);
          const list = await call(`/v1/billing/meters/${encodeURIComponent(m.id)}/event_summaries?${q}`);
          for (const s of list.data) values.set(s.start_time, BigInt(Math.trunc(Number(s.aggregated_value))));
          if (!list.has_more || !list.data.length) break;
          after = list.data[list.data.length - 1].id;
        }
      } catch (err) {
        if (err.status !== 404) throw err; // 404: Stripe's "no such customer" for this meter: nothing here
      }
      const present = [...values.entries()].filter(([, v]) => v !== 0n).sort((a, b) => a[0] - b[0]);
      const formula = m.default_aggregation.formula;
      const total = formula === "last"
        ? (present.length ? present[present.length - 1][1].toString() : "(none)")
        : present.reduce((a, [, v]) => a + v, 0n).toString();
      rows.push(row([m.display_name, m.event_name, formula, m.status, String(present.length), total],
        [null, null, null, null, "num", "num"]));
      for (const [t, v] of present) {
        const tr = row([m.event_name, new Date(t * 1000).toISOString().slice(0, grouping === "hour" ? 16 : 10).replace("T", " "), v.toString()], [null, null, "num"]);
        tr.dataset.meter = m.id;
        tr.dataset.start = String(t);
        nonZero.push(tr);
      }
    }
    table.replaceChildren(...rows);
    buckets.replaceChildren(...nonZero);
    const section = $("#customer-panel");
    section.dataset.customer = customer;
    section.dataset.state = "shown";
    note.textContent = `${customer}: ${meters.length} meter(s), ${windows} ${grouping === "hour" ? "hour" : "day"}(s) from ${$("#cust-from").value} to ${$("#cust-to").value} (UTC).`;
  }

  // ---- events explorer ----------------------------------------------------------------------------
  async function searchEvents(event) {
    if (event) event.preventDefault();
    const kind = $("#ev-kind").value;
    const q = new URLSearchParams({ kind, limit: "100" });
    for (const [id, name] of [["#ev-meter", "meter"], ["#ev-customer", "customer"], ["#ev-identifier", "identifier"]]) {
      const v = $(id).value.trim();
      if (v) q.set(name, v);
    }
    $("#ev-note").textContent = "Searching…";
    const found = await call(`/dashboard/api/events?${q}`);
    $("#ev-table tbody").replaceChildren(...found.data.map((r) => {
      const tr = row([
        new Date(r.time * 1000).toISOString().slice(0, 19).replace("T", " "),
        r.event_name || "",
        r.customer || "",
        r.identifier || "",
        kind === "rejected" ? (r.code || "") : (r.kind === "cancel" ? "(cancellation)" : ""),
        r.message || "",
        r.payload ? JSON.stringify(r.payload) : "",
      ], [null, null, null, "ident", "code", null, "payload"]);
      tr.dataset.identifier = r.identifier || "";
      return tr;
    }));
    const section = $("#events-panel");
    section.dataset.state = found.data.length ? "found" : "none";
    section.dataset.kind = kind;
    $("#ev-note").textContent = (found.data.length ? `${found.data.length}${found.has_more ? "+" : ""} ${kind} event(s)` : `No ${kind} events match`) +
      ` among the last ${found.tail_per_partition} records of each partition of ${found.topic} (${found.scanned} read).`;
  }

  // ---- CSV export ---------------------------------------------------------------------------------
  function csvCell(text) {
    return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function tableCsv(table) {
    const lines = [];
    for (const tr of table.querySelectorAll("tr")) {
      const fields = [...tr.children].map((c) => {
        const text = c.textContent.trim();
        // numbers are shown with thousands separators; the file gets the exact integer
        return csvCell(c.classList.contains("num") ? text.replace(/,/g, "") : text);
      });
      lines.push(fields.join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }

  function exportCsv(event) {
    const button = event.target.closest("button.csv");
    if (!button) return;
    const table = document.getElementById(button.dataset.table);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([tableCsv(table)], { type: "text/csv" }));
    link.download = `${button.dataset.table}.csv`;
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  function wire() {
    $("#new-meter").addEventListener("submit", createMeter);
    $("#edit-rename").addEventListener("click", rename);
    $("#edit-deactivate").addEventListener("click", () => setStatus("deactivate"));
    $("#edit-reactivate").addEventListener("click", () => setStatus("reactivate"));
    $("#edit-meter").addEventListener("change", () => {
      $("#edit-display-name").value = "";
    });
    $("#cust-form").addEventListener("submit", (e) => showCustomer(e).catch((err) => {
      $("#cust-note").textContent = `error: ${err.message}`;
    }));
    document.addEventListener("click", exportCsv);
    $("#ev-form").addEventListener("submit", (e) => searchEvents(e).catch((err) => {
      $("#ev-note").textContent = `error: ${err.message}`;
    }));
    const now = Math.floor(Date.now() / 1000);
    dateInput($("#cust-from"), now - 6 * DAY);
    dateInput($("#cust-to"), now);
    const params = new URLSearchParams(location.search);
    fillMeterPicker().catch((err) => say(`Cannot list meters: ${err.message}`, true));
    if (params.get("customer")) {
      $("#cust-id").value = params.get("customer");
    }
  }

  wire();
})();
