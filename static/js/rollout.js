// The rollout page's live region (status, guard table and the chart figures). Under the ASGI
// server the region carries data-rollout-live and is fed by that websocket: the web process
// renders it once per change for all its viewers. Where the socket cannot be opened (no
// WebSocket, a proxy that drops the upgrade) the page polls the same region over HTTP every 2 s
// instead; under WSGI the region polls with htmx by itself. Either way the charts sit outside
// the region and are redrawn in place with Plotly.react from the new figures (charts.js), as
// the dashboards update, rather than replaced.
(function () {
  "use strict";

  const POLL_MS = 2000;
  // Closed by the server on purpose: not signed in, not an operator, no such rollout.
  const REFUSED = [4401, 4403, 4404];
  // Sockets that fail before they open, in a row, before the page polls instead.
  const TRIES = 2;

  function redraw() {
    const charts = document.getElementById("rollout-charts");
    if (charts && typeof sluiceDrawCharts === "function") sluiceDrawCharts(charts);
  }

  // htmx polling (WSGI) swaps the region itself; only the charts need redrawing.
  document.addEventListener("htmx:afterSettle", () => {
    if (document.getElementById("live")) redraw();
  });

  // The CSRF field of the page as the server rendered it (a running or paused rollout has its
  // buttons): a region rendered for the socket has none, and its forms take a copy of this one.
  const csrfField = document.querySelector("#live form [name=csrfmiddlewaretoken]");

  // Put the region in `html` in place of the page's; the new region, or null when `html` has
  // none (a login page after the session ended).
  function apply(html) {
    const current = document.getElementById("live");
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.querySelector("#live");
    if (!current || !fresh) return null;
    if (csrfField) {
      fresh.querySelectorAll("form:not(:has([name=csrfmiddlewaretoken]))").forEach((form) => {
        form.appendChild(csrfField.cloneNode());
      });
    }
    fresh.dataset.updates = String(Number(current.dataset.updates || 0) + 1);
    current.replaceWith(fresh);
    redraw();
    return fresh;
  }

  function setMode(mode) {
    const charts = document.getElementById("rollout-charts");
    if (charts) charts.dataset.live = mode;
  }

  function start(live) {
    const url = live.dataset.poll;
    let failures = 0;
    let delay = 1000;
    let done = false;

    function poll() {
      setMode("polling");
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
        .then((response) => {
          if (response.ok) return response.text();
          // A server error or a network fault may pass; a refusal will not.
          if (response.status >= 500) return null;
          setMode("refused");
          return undefined;
        })
        .then((html) => {
          if (html === undefined) return;
          if (html === null) {
            setTimeout(poll, POLL_MS * 2);
            return;
          }
          const fresh = apply(html);
          if (fresh && fresh.dataset.rolloutLive) setTimeout(poll, POLL_MS);
          else setMode("ended");
        })
        .catch(() => setTimeout(poll, POLL_MS * 2));
    }

    function connect() {
      if (typeof WebSocket === "undefined") {
        poll();
        return;
      }
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      let socket;
      try {
        socket = new WebSocket(scheme + location.host + live.dataset.rolloutLive);
      } catch (error) {
        poll();
        return;
      }
      let opened = false;
      socket.addEventListener("open", () => {
        opened = true;
        failures = 0;
        delay = 1000;
        setMode("socket");
      });
      socket.addEventListener("message", (event) => {
        const message = JSON.parse(event.data);
        if (message.type !== "rollout") return;
        const fresh = apply(message.html);
        if (!fresh || !fresh.dataset.rolloutLive) {
          // Promoted or rolled back: nothing changes any more.
          done = true;
          setMode("ended");
          socket.close();
        }
      });
      socket.addEventListener("close", (event) => {
        if (done) return;
        if (REFUSED.includes(event.code)) {
          setMode("refused");
          return;
        }
        if (!opened) failures += 1;
        if (failures >= TRIES) {
          poll();
          return;
        }
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 15000);
      });
    }

    connect();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("live");
    if (live && live.dataset.rolloutLive) start(live);
  });
})();
