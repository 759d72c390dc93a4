// Usage graphs, drawn with uPlot (static/vendor/uplot) from GET
// <data-url>?range=1h|24h|7d|30d (the API's usage actions): on the VPS page
// (#usage, with limit hits and OOM kills; staff, data-limits="yes", also get
// the plan's limits as lines) and on a node's page (#node-usage: its VEs
// stacked against capacity).
(function () {
  "use strict";

  var GiB = 1 << 30, MiB = 1 << 20;

  function bytes(v) {
    if (v == null) return "–";
    if (Math.abs(v) >= GiB) return (v / GiB).toFixed(2) + " GiB";
    if (Math.abs(v) >= MiB) return (v / MiB).toFixed(1) + " MiB";
    if (Math.abs(v) >= 1024) return (v / 1024).toFixed(1) + " KiB";
    return Math.round(v) + " B";
  }
  // The time axis spans the period asked for (the API's start/end), not the samples:
  // uPlot would stretch a single sample over years.
  function timeScale(data) {
    return { x: { time: true, range: function () { return [data.start, data.end]; } } };
  }
  function rate(v) { return v == null ? "–" : bytes(v) + "/s"; }
  function plain(v) { return v == null ? "–" : (Math.round(v * 100) / 100).toString(); }

  // One chart per figure: its series from the API answer, limits for staff.
  function charts(data, withLimits) {
    var limits = data.limits || {};
    function limitLine(value) {
      return data.time.map(function () { return value; });
    }
    var defs = {
      cpu: { fmt: plain, series: [["used", data.cpu, "#2563eb"]] },
      ram: { fmt: bytes, series: [["used", data.ram, "#16a34a"], ["file cache", data.ram_cache, "#a3a3a3"],
                                  ["swap", data.swap, "#ca8a04"]] },
      disk: { fmt: bytes, series: [["used", data.disk, "#9333ea"]] },
      net: { fmt: rate, series: [["in", data.rx, "#0891b2"], ["out", data.tx, "#db2777"]] },
      packets: { fmt: plain, series: [["in /s", data.rx_packets, "#0891b2"],
                                      ["out /s", data.tx_packets, "#db2777"]] },
      processes: { fmt: plain, series: [["processes", data.processes, "#ea580c"]] },
      // tracked connections (routed VEs with a cap) and new ones the cap refused
      connections: { fmt: plain, series: [["held", data.conntrack, "#0d9488"],
                                          ["refused", data.conntrack_refused, "#dc2626"]] }
    };
    if (data.cpu_max) defs.cpu.series.push(["peak", data.cpu_max, "#93c5fd"]);
    if (data.ram_max) defs.ram.series.push(["peak", data.ram_max, "#86efac"]);
    if (withLimits) {
      var caps = { cpu: limits.cpu, ram: limits.ram, disk: limits.disk, processes: limits.processes,
                   connections: limits.conntrack };
      Object.keys(caps).forEach(function (id) {
        if (caps[id]) defs[id].series.push(["limit", limitLine(caps[id]), "#dc2626", [6, 4]]);
      });
    }
    // Limit hits and OOM kills (OpenVZ's failcnt): customers see theirs too.
    defs.hits = { fmt: plain, series: [["limit hits", data.limit_hits, "#dc2626"]] };
    return defs;
  }

  function draw(box, data) {
    var withLimits = box.getAttribute("data-limits") === "yes";
    var defs = charts(data, withLimits);
    var holder = box.querySelector(".charts");
    if (!document.getElementById("chart-hits")) {
      var fig = document.createElement("figure");
      fig.className = "chart"; fig.id = "chart-hits";
      fig.innerHTML = "<figcaption>Limit hits and OOM kills</figcaption>";
      holder.appendChild(fig);
    }
    Object.keys(defs).forEach(function (id) {
      var fig = document.getElementById("chart-" + id);
      if (!fig) return;
      fig.querySelectorAll(".uplot").forEach(function (old) { old.remove(); });
      var def = defs[id];
      var series = [{}].concat(def.series.map(function (s) {
        return { label: s[0], stroke: s[2], width: 1.5, dash: s[3], spanGaps: false,
                 value: function (u, v) { return def.fmt(v); } };
      }));
      var opts = {
        width: Math.max(280, fig.clientWidth - 8), height: 170, series: series,
        scales: timeScale(data),
        axes: [{}, { values: function (u, vals) { return vals.map(def.fmt); }, size: 84 }]
      };
      var columns = [data.time].concat(def.series.map(function (s) { return s[1]; }));
      new uPlot(opts, columns, fig);
      fig.setAttribute("data-points", String(data.time.length));
    });
    var note = document.getElementById("usage-note");
    note.textContent = data.time.length ? "" :
      "No samples for this period yet: the node samples every 30 seconds.";
    box.setAttribute("data-loaded", data.range);
  }

  var PALETTE = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777",
                 "#ca8a04", "#4f46e5", "#64748b"];

  // A node: its VEs' RAM and CPU stacked (each line is the sum of those below
  // it, filled; drawn biggest first), against the physical capacity.
  function drawNode(box, data) {
    [["ram", bytes, data.capacity.ram], ["cpu", plain, data.capacity.cpus]].forEach(function (c) {
      var fig = document.getElementById("chart-node-" + c[0]);
      fig.querySelectorAll(".uplot").forEach(function (old) { old.remove(); });
      var running = data.time.map(function () { return 0; });
      // An hour no VE reported is a gap (null), not a dip to zero.
      var measured = data.time.map(function (t, i) {
        return data.ves.some(function (ve) { return ve[c[0]][i] != null; });
      });
      var stacked = data.ves.map(function (ve) {
        running = running.map(function (sum, i) { return sum + (ve[c[0]][i] || 0); });
        return { label: ve.veid ? ve.veid + " " + ve.hostname : ve.hostname,
                 values: running.map(function (v, i) { return measured[i] ? v : null; }) };
      }).reverse();
      var series = [{}].concat(stacked.map(function (s, i) {
        var color = PALETTE[(stacked.length - 1 - i) % PALETTE.length];
        return { label: s.label, stroke: color, fill: color + "55", width: 1,
                 value: function (u, v) { return c[1](v); } };
      }));
      // What the node itself measured (MemTotal - MemAvailable: host processes
      // included), so staff see what the VEs' sum leaves out.
      series.push({ label: "node total", stroke: "#111827", width: 1.5,
                    value: function (u, v) { return c[1](v); } });
      series.push({ label: "physical", stroke: "#dc2626", dash: [6, 4], width: 1.5,
                    value: function (u, v) { return c[1](v); } });
      var columns = [data.time].concat(stacked.map(function (s) { return s.values; }));
      columns.push(data.node[c[0]]);
      columns.push(data.time.map(function () { return c[2]; }));
      new uPlot({ width: Math.max(280, fig.clientWidth - 8), height: 220, series: series,
                  scales: timeScale(data),
                  axes: [{}, { values: function (u, vals) { return vals.map(c[1]); }, size: 84 }] },
                columns, fig);
      fig.setAttribute("data-points", String(data.time.length));
    });
    document.getElementById("usage-note").textContent = data.time.length ? "" :
      "No samples for this period yet.";
    box.setAttribute("data-loaded", data.range);
  }

  function load(box, range) {
    var url = box.getAttribute("data-url") + "?range=" + encodeURIComponent(range);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) { (box.id === "node-usage" ? drawNode : draw)(box, data); })
      .catch(function () {
        document.getElementById("usage-note").textContent = "Usage could not be loaded.";
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("usage") || document.getElementById("node-usage");
    if (!box || typeof uPlot === "undefined") return;
    box.querySelectorAll("[data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        box.querySelectorAll("[data-range]").forEach(function (b) {
          b.setAttribute("aria-pressed", b === button ? "true" : "false");
        });
        load(box, button.getAttribute("data-range"));
      });
    });
    load(box, "24h");
  });
})();
