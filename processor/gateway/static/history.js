// The pipeline's last hour (GET /dashboard/api/history, sampled by the gateways every 15 s): events/s,
// processor and sink behind in seconds and in records, Stripe errors/s; redrawn every 15 s.
"use strict";

(function () {
  const charts = [
    ["#hist-events", "events_per_s", "/s"],
    ["#hist-proc-behind", "processor_behind_s", " s"],
    ["#hist-sink-behind", "sink_behind_s", " s"],
    ["#hist-proc-lag", "processor_lag_records", ""],
    ["#hist-sink-lag", "sink_lag_records", ""],
    ["#hist-stripe-errors", "stripe_errors_per_s", "/s"],
  ];

  async function load() {
    const response = await fetch(new URL("/dashboard/api/history", location.origin), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`${response.status}`);
    const h = await response.json();
    for (const [sel, field, unit] of charts) {
      const points = h.data.map((p) => ({ t: p.t, value: p[field] === undefined ? null : p[field] }));
      window.MeterCharts.drawLine(document.querySelector(sel), points, { start: h.start, end: h.end, unit, label: field });
    }
    const box = document.querySelector("#history");
    box.dataset.state = h.data.length ? "drawn" : "empty";
    box.dataset.samples = String(h.data.length);
  }

  function tick() {
    const live = document.querySelector("#live");
    if (live && !live.checked) return;
    load().catch((err) => {
      document.querySelector("#history").dataset.state = `error: ${err.message}`;
    });
  }

  tick();
  setInterval(tick, 15000);
})();
