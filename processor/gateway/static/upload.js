// The upload page: check a bulk usage file (dry run), then send it, through POST /dashboard/api/imports
// (the same importer as `meterstream import`). The file is posted twice: the send names the digest the
// check answered, so the gateway imports exactly what was checked. No build step, no libraries.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const MAX_BYTES = 5 * 1024 * 1024;
  const IMPORTS = "/dashboard/api/imports";
  const state = { file: null, checked: null, busy: false };

  const { allMeters, call, fmt, row } = window.meterstream; // common.js

  function utc(ts) {
    return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ");
  }

  function say(text, isError) {
    const el = $("#message");
    el.textContent = text;
    el.className = isError ? "error" : "muted";
  }

  function post(fields) {
    const form = new FormData();
    Object.entries(fields).forEach(([k, v]) => form.append(k, v));
    form.append("file", state.file, state.file.name);
    return call(IMPORTS, { method: "POST", body: form });
  }

  function updateButtons() {
    $("#check").disabled = state.busy || !state.file;
    $("#send").disabled = state.busy || !state.checked;
  }

  // ---- template download ---------------------------------------------------------------------------
  async function loadMeters() {
    const meters = await allMeters();
    const select = $("#template-meter");
    select.replaceChildren(...meters.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = `${m.display_name} (${m.event_name})`;
      return option;
    }));
    showTemplateLink();
  }

  function showTemplateLink() {
    const id = $("#template-meter").value;
    const link = $("#template-link");
    link.hidden = !id;
    if (id) link.href = `${IMPORTS}/template?meter=${encodeURIComponent(id)}`;
  }

  // ---- check ---------------------------------------------------------------------------------------
  function showCheck(report) {
    const section = $("#report");
    section.hidden = false;
    $("#valid-rows").textContent = fmt(report.valid_rows);
    $("#invalid-rows").textContent = fmt(report.invalid_rows);
    $("#format").textContent = report.format;
    $("#size").textContent = `${fmt(report.size)} B`;
    const done = report.already_imported;
    const already = $("#already");
    already.hidden = !done;
    $("#force-label").hidden = !done;
    if (done) {
      already.textContent = `This file was already imported at ${utc(done.finished_at)} UTC (${fmt(done.rows)} rows). ` +
        "Sending it again is refused unless you tick \"import again\"; even then its rows keep their identifiers, " +
        "so the processor drops them as duplicates within 24 hours.";
    }
    $("#involved tbody").replaceChildren(...(report.meters || []).map((m) => row(
      [m.event_name, m.meter ? `${m.meter.display_name} (${m.meter.id})` : "no meter: these rows will be rejected (no_meter)",
        m.meter ? m.meter.formula : "", m.meter ? m.meter.status : "", fmt(m.rows)],
      ["", m.meter ? "" : "error", "", m.meter && m.meter.status !== "active" ? "error" : "", "num"],
    )));
    $("#errors tbody").replaceChildren(...report.errors.map((e) => {
      // The bad cell as the file holds it (quoted, so an empty cell is visible as ""), next to the rule.
      const hasCell = e.column !== undefined && e.column !== null;
      const tr = row([String(e.line), hasCell ? e.column : "", hasCell ? JSON.stringify(e.cell) : "", e.message],
        ["num", "", "cell", ""]);
      tr.dataset.line = String(e.line);
      if (hasCell) tr.dataset.column = e.column;
      return tr;
    }));
    $("#errors-note").textContent = report.invalid_rows === 0 ? "None." :
      (report.errors_truncated ? `Showing the first ${fmt(report.errors.length)} of ${fmt(report.invalid_rows)}.` : "");
    section.dataset.state = done ? "already-imported" : "checked";
  }

  async function check() {
    state.busy = true;
    state.checked = null;
    $("#result").hidden = true;
    updateButtons();
    say("Checking…");
    try {
      const report = await post({ dry_run: "true" });
      state.checked = report;
      showCheck(report);
      say(report.invalid_rows && !$("#skip-invalid").checked
        ? "Some rows are invalid: fix the file, or tick \"skip invalid rows\" to send only the valid ones."
        : "Checked; nothing has been sent yet.");
    } catch (err) {
      $("#report").hidden = true;
      say(`Check failed: ${err.message}`, true);
    } finally {
      state.busy = false;
      updateButtons();
    }
  }

  // ---- send ----------------------------------------------------------------------------------------
  async function send() {
    state.busy = true;
    updateButtons();
    say("Sending…");
    const result = $("#result");
    try {
      const report = await post({
        digest: state.checked.digest,
        skip_invalid: $("#skip-invalid").checked ? "true" : "false",
        force: $("#force").checked ? "true" : "false",
      });
      result.hidden = false;
      result.dataset.state = report.status;
      if (report.status === "already_imported") {
        // One message, not a "Done" next to a "Nothing sent": the send was refused.
        const done = report.already_imported;
        $("#result-text").textContent = `Nothing sent: this file was already imported at ${utc(done.finished_at)} UTC. ` +
          "Tick \"import again\" to send it anyway.";
        $("#force-label").hidden = false;
        say("");
      } else {
        const resumed = report.skipped_done ? ` (${fmt(report.skipped_done)} delivered by an earlier, interrupted import)` : "";
        const skipped = report.invalid_rows ? `; ${fmt(report.invalid_rows)} invalid row(s) skipped` : "";
        $("#result-text").textContent = `Sent ${fmt(report.sent)} row(s)${resumed}${skipped}.`;
        say("Done. The dashboard shows the usage once the processor has applied it.");
      }
      result.dataset.sent = String(report.sent);
    } catch (err) {
      result.hidden = false;
      result.dataset.state = "error";
      $("#result-text").textContent = `Not sent: ${err.message}`;
      say("");
    } finally {
      state.busy = false;
      updateButtons();
    }
  }

  function pickFile() {
    const file = $("#file").files[0] || null;
    state.checked = null;
    $("#report").hidden = true;
    $("#result").hidden = true;
    $("#force").checked = false;
    $("#force-label").hidden = true;
    if (file && file.size > MAX_BYTES) {
      state.file = null;
      say(`${file.name} is ${fmt(file.size)} bytes: files may hold at most 5 MB (${fmt(MAX_BYTES)} bytes). Split it.`, true);
    } else {
      state.file = file;
      say(file ? "Press Check to validate the file; nothing is sent until you press Send." : "");
    }
    updateButtons();
  }

  $("#file").addEventListener("change", pickFile);
  $("#check").addEventListener("click", check);
  $("#send").addEventListener("click", send);
  $("#template-meter").addEventListener("change", showTemplateLink);
  loadMeters().catch((err) => say(`Cannot list meters: ${err.message}`, true));
  pickFile();
})();
