// What the dashboard's pages share, loaded before their own scripts (index.html: app.js and ops.js;
// upload.html: upload.js): the one fetch wrapper, table rows, number formatting and the meter list.
// No build step, no libraries: one global object, `meterstream`.
"use strict";

window.meterstream = (function () {
  // Integers beyond 2**53 stay exact: the reviver keeps the number's source text when it is not safe.
  function parseExact(text) {
    return JSON.parse(text, (key, value, ctx) => {
      if (typeof value === "number" && ctx && typeof ctx.source === "string" && !Number.isSafeInteger(value) && /^-?\d+$/.test(ctx.source)) {
        return BigInt(ctx.source);
      }
      return value;
    });
  }

  // A JSON call to the gateway. An absolute URL on the page's origin: a page opened as http://<key>:@host/
  // has credentials in its own URL, and fetch() refuses a relative path resolved against such a URL. A
  // string body is a form (application/x-www-form-urlencoded); a FormData body gets its multipart type
  // from the browser. A failed call throws an Error carrying the HTTP status and Stripe's message.
  async function call(path, init) {
    const headers = { Accept: "application/json" };
    if (init && typeof init.body === "string") headers["Content-Type"] = "application/x-www-form-urlencoded";
    const response = await fetch(new URL(path, location.origin), { credentials: "same-origin", headers, ...init });
    let body = null;
    try {
      body = parseExact(await response.text());
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      const error = new Error(`${response.status}: ${message}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // Every meter, following Stripe's list pagination (at most 2,000).
  async function allMeters() {
    const meters = [];
    let after = null;
    for (let page = 0; page < 20; page++) {
      const q = new URLSearchParams({ limit: "100" });
      if (after) q.set("starting_after", after);
      const list = await call(`/v1/billing/meters?${q}`);
      meters.push(...list.data);
      if (!list.has_more || !list.data.length) break;
      after = list.data[list.data.length - 1].id;
    }
    return meters;
  }

  // A table row of text cells; classes[i], when given, is cell i's class.
  function row(cells, classes) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (classes && classes[i]) td.className = classes[i];
      tr.appendChild(td);
    });
    return tr;
  }

  function fmt(n) {
    if (typeof n === "bigint") return n.toLocaleString("en-US");
    return Number(n).toLocaleString("en-US");
  }

  return { allMeters, call, fmt, parseExact, row };
})();
