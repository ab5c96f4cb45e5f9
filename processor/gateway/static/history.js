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

  function duration(s) {
    if (s < 1) return "caught up";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

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
    // the newest sample's seconds behind, in words ("3 min"), on the cards
    const last = h.data.length ? h.data[h.data.length - 1] : null;
    for (const [sel, field] of [["#proc-behind", "processor_behind_s"], ["#sink-behind", "sink_behind_s"]]) {
      const card = document.querySelector(sel);
      const v = last ? last[field] : undefined;
      card.textContent = v === null || v === undefined ? (last ? "over the samples" : "–") : duration(v);
      card.dataset.seconds = v === null || v === undefined ? "" : String(v);
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
