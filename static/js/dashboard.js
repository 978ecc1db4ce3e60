// Keeps a dashboard live: draws the figures the server embedded (json_script), subscribes over
// the websocket, redraws everything from the snapshot it receives on every (re)subscribe (which
// fills any gap a reconnect left), and merges each tick's update into the traces in place.
(function () {
  "use strict";
  const root = document.querySelector("[data-dashboard]");
  if (!root || typeof Plotly === "undefined") return;

  const config = { displayModeBar: false, responsive: true };
  const status = root.querySelector("[data-live-status]");
  const charts = {};
  let revision = 0;

  function draw(el, figure) {
    const layout = Object.assign({}, figure.layout, { datarevision: ++revision });
    Plotly.react(el, figure.data, layout, config);
  }

  root.querySelectorAll("[data-chart]").forEach((el) => {
    charts[el.dataset.chart] = el;
    const source = document.getElementById(el.dataset.figure);
    if (source) draw(el, JSON.parse(source.textContent));
  });

  // Replace the points whose x the update carries, append the new ones, drop those before `since`.
  function merge(el, traces, since) {
    if (!el.data) return;
    const data = el.data.map((trace, i) => {
      const part = traces[i];
      const xs = Array.from(trace.x || []);
      const ys = Array.from(trace.y || []);
      if (part) {
        part.x.forEach((x, j) => {
          const at = xs.lastIndexOf(x);
          if (at >= 0) {
            ys[at] = part.y[j];
            return;
          }
          let k = xs.length;
          while (k > 0 && xs[k - 1] > x) k -= 1;
          xs.splice(k, 0, x);
          ys.splice(k, 0, part.y[j]);
        });
      }
      let drop = 0;
      while (drop < xs.length && xs[drop] < since) drop += 1;
      return Object.assign({}, trace, { x: xs.slice(drop), y: ys.slice(drop) });
    });
    Plotly.react(el, data, Object.assign({}, el.layout, { datarevision: ++revision }), config);
  }

  function setTiles(tiles) {
    Object.entries(tiles || {}).forEach(([name, value]) => {
      const tile = root.querySelector(`[data-tile="${name}"]`);
      if (tile && tile.textContent !== value) tile.textContent = value;
    });
  }

  function setRows(name, rows) {
    const body = root.querySelector(`[data-rows="${name}"]`);
    if (!body || !rows) return;
    const columns = body.dataset.columns.split(" ");
    const fresh = rows.map((row) => {
      const tr = document.createElement("tr");
      columns.forEach((column) => {
        const td = document.createElement("td");
        td.textContent = String(row[column] ?? "");
        tr.appendChild(td);
      });
      return tr;
    });
    if (!fresh.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "empty";
      td.textContent = body.dataset.empty || "";
      tr.appendChild(td);
      fresh.push(tr);
    }
    body.replaceChildren(...fresh);
  }

  function apply(message) {
    if (message.type === "snapshot") {
      Object.entries(message.charts).forEach(([name, figure]) => {
        if (charts[name]) draw(charts[name], figure);
      });
    } else if (message.type === "update") {
      Object.entries(message.charts).forEach(([name, change]) => {
        const el = charts[name];
        if (!el) return;
        if (change.figure) draw(el, change.figure);
        else merge(el, change.traces, message.since);
      });
      root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
    } else {
      return;
    }
    setTiles(message.tiles);
    setRows("steps", message.steps);
    setRows("breakers", message.breakers);
    setRows("workers", message.workers);
    if (message.at) root.dataset.updatedAt = message.at;
  }

  function show(text, state) {
    if (!status) return;
    status.textContent = text;
    status.className = `badge live-status ${state}`;
  }

  const REFUSED = { 4401: "signed out", 4403: "not allowed", 4404: "no such pipeline" };
  let delay = 1000;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard/`);
    socket.addEventListener("open", () => {
      delay = 1000;
      socket.send(
        JSON.stringify({
          action: "subscribe",
          pipeline: root.dataset.pipeline || "",
          range: root.dataset.range || "",
        }),
      );
      show("live", "ok");
    });
    socket.addEventListener("message", (event) => apply(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => {
      if (REFUSED[event.code]) {
        show(REFUSED[event.code], "bad");
        return;
      }
      show("reconnecting…", "muted");
      // 4429: this page sent too many messages; wait longer before trying again.
      if (event.code === 4429) delay = Math.max(delay, 5000);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
})();
