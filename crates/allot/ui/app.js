// allot dashboard: charts (uPlot) on the agent page, the live events table,
// and showing an operator action's error answer (htmx swaps only 2xx).
(function () {
  "use strict";

  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (evt.detail.target && evt.detail.target.id === "action-result") {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  // The live fleet's stream: open or not (for a person, and for tests waiting on it).
  document.addEventListener("htmx:sseOpen", function () { document.body.dataset.sse = "open"; });
  document.addEventListener("htmx:sseError", function () { document.body.dataset.sse = "error"; });

  function human(unit, v) {
    if (v == null) return "";
    if (unit === "bytes") {
      const u = ["B", "Ki", "Mi", "Gi", "Ti"];
      let i = 0;
      while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
      return (i ? v.toFixed(1) : v) + u[i];
    }
    if (unit === "millicores") return Math.round(v) + "m";
    return String(Math.round(v));
  }

  const OUTCOME_COLOR = { success: "#1a7f37", failure: "#cf222e", cancelled: "#6e7781", fallback: "#9a6700" };

  // window.allotCharts[resource] = { plot, actions, markers: [{at_ms, x}] } for inspection and tests.
  window.allotCharts = {};

  // The data of a chart: x (seconds), usage, then each limit as a flat line.
  function dataOf(res) {
    const x = res.points.map(p => p[0] / 1000);
    const data = [x, res.points.map(p => p[1])];
    for (const name of ["soft", "hard", "burst"]) {
      if (res[name] != null) data.push(x.map(() => res[name]));
    }
    return data;
  }

  function chartFor(box, res, since, until) {
    const series = [{}, { label: res.resource, stroke: "#0969da", width: 2, value: (u, v) => human(res.unit, v) }];
    for (const [name, color, dash] of [["soft", "#bf8700", null], ["hard", "#cf222e", null], ["burst", "#8250df", [6, 4]]]) {
      if (res[name] != null) {
        series.push({ label: name + " " + human(res.unit, res[name]), stroke: color, width: 1.5, dash: dash || undefined, points: { show: false } });
      }
    }
    const state = { actions: res.actions || [], markers: [], limits: [res.soft, res.hard, res.burst].join(), since: since, until: until };
    const tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    const el = document.createElement("div");
    el.className = "chart";
    el.dataset.resource = res.resource;
    el.dataset.actions = String(state.actions.length);
    const title = document.createElement("h3");
    box.appendChild(title);
    box.appendChild(el);
    el.appendChild(tip);
    const showTip = u => {
      const left = u.cursor.left;
      const near = left == null || left < 0 ? [] : state.markers.filter(m => Math.abs(m.x - left) <= 6);
      if (!near.length) { tip.hidden = true; return; }
      const found = state.actions.filter(a => near.some(m => m.at_ms === a.at_ms));
      tip.textContent = found.map(a => new Date(a.at_ms).toISOString().slice(11, 19) + " " + a.action + " → " + a.outcome + (a.detail ? ": " + a.detail : "")).join("\n");
      const w = u.bbox.width / devicePixelRatio;
      tip.style.left = left > w / 2 ? "" : (left + 80) + "px";
      tip.style.right = left > w / 2 ? (w - left + 10) + "px" : "";
      tip.hidden = false;
    };
    const opts = {
      width: Math.min(box.clientWidth || 900, 1100),
      height: 220,
      scales: { x: { time: true, range: () => [state.since / 1000, state.until / 1000] }, y: { range: (u, lo, hi) => [0, Math.max(hi, res.hard || 0, res.burst || 0) * 1.1 || 1] } },
      axes: [{}, res.unit === "bytes" || res.unit === "millicores" ? { values: (u, vals) => vals.map(v => human(res.unit, v)), size: 70 } : { size: 70 }],
      series: series,
      hooks: {
        draw: [u => {
          const ctx = u.ctx, b = u.bbox;
          state.markers = [];
          ctx.save();
          for (const a of state.actions) {
            const px = u.valToPos(a.at_ms / 1000, "x", true);
            if (px < b.left || px > b.left + b.width) continue;
            state.markers.push({ at_ms: a.at_ms, x: u.valToPos(a.at_ms / 1000, "x"), action: a.action, outcome: a.outcome });
            ctx.strokeStyle = OUTCOME_COLOR[a.outcome] || "#000";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.beginPath();
            ctx.moveTo(px, b.top);
            ctx.lineTo(px, b.top + b.height);
            ctx.stroke();
            ctx.fillStyle = ctx.strokeStyle;
            ctx.beginPath();
            ctx.moveTo(px - 6 * devicePixelRatio, b.top);
            ctx.lineTo(px + 6 * devicePixelRatio, b.top);
            ctx.lineTo(px, b.top + 9 * devicePixelRatio);
            ctx.fill();
          }
          ctx.restore();
          el.dataset.markers = String(state.markers.length);
          showTip(u);
        }],
        setCursor: [showTip],
      },
    };
    const plot = new uPlot(opts, dataOf(res), el);
    const chart = {
      plot: plot, el: el,
      get actions() { return state.actions; }, get markers() { return state.markers; },
      get since_ms() { return state.since; }, get until_ms() { return state.until; },
      // A live refresh: the same chart, new data (the cursor and its tip stay); false when its limits changed.
      update(r, s, u) {
        if ([r.soft, r.hard, r.burst].join() !== state.limits) return false;
        state.actions = r.actions || [];
        state.since = s;
        state.until = u;
        el.dataset.actions = String(state.actions.length);
        title.textContent = r.resource + " (" + r.source + ", " + r.points.length + " points)";
        plot.setData(dataOf(r));
        return true;
      },
    };
    title.textContent = res.resource + " (" + res.source + ", " + res.points.length + " points)";
    window.allotCharts[res.resource] = chart;
    return chart;
  }

  async function loadCharts(box) {
    const agent = box.dataset.agent, range = box.dataset.range;
    const r = await fetch("/ui/agents/" + encodeURIComponent(agent) + "/chart?range=" + range, { credentials: "same-origin" });
    const v = await r.json();
    if (!r.ok) {
      const why = (v.error && v.error.message) || ("chart: " + r.status);
      // A failed live refresh keeps the charts drawn; only a first load shows the reason instead.
      if (box.dataset.loaded) { box.title = why; } else { box.textContent = why; }
      return;
    }
    box.title = "";
    const names = v.resources.map(x => x.resource).join();
    const same = box.dataset.resources === names &&
      v.resources.every(x => window.allotCharts[x.resource] && window.allotCharts[x.resource].update(x, v.since_ms, v.until_ms));
    if (!same) {
      box.replaceChildren();
      window.allotCharts = {};
      if (!v.resources.length) { box.textContent = "No samples in this range yet."; }
      for (const res of v.resources) chartFor(box, res, v.since_ms, v.until_ms);
      box.dataset.resources = names;
    }
    box.dataset.loaded = String(Date.now());
  }

  function charts() {
    const box = document.getElementById("charts");
    if (!box) return;
    loadCharts(box).catch(e => { box.textContent = "chart: " + e; });
    if (box.dataset.live) {
      setInterval(() => { if (!document.hidden) loadCharts(box).catch(() => {}); }, 2000);
    }
  }

  function events() {
    const table = document.getElementById("events");
    if (!table) return;
    const body = table.tBodies[0];
    const state = document.getElementById("stream-state");
    const q = new URLSearchParams();
    if (table.dataset.topic) q.set("topic", table.dataset.topic);
    if (table.dataset.since) q.set("since", table.dataset.since);
    // EventSource resends the last id it saw (Last-Event-ID) when it reconnects: the stream resumes there.
    const es = new EventSource("/ui/events/stream?" + q.toString());
    es.onopen = () => { state.textContent = "live"; };
    es.onerror = () => { state.textContent = "reconnecting"; };
    es.onmessage = (m) => {
      const e = JSON.parse(m.data);
      const tr = document.createElement("tr");
      tr.dataset.seq = e.seq;
      tr.dataset.topic = e.topic;
      for (const text of [e.seq, new Date(e.at_ms).toISOString().replace("T", " ").slice(0, 23), e.topic, e.agent || "", JSON.stringify(e.data)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    };
  }

  charts();
  events();
})();
