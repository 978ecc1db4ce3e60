// The review pages: keyboard shortcuts on the review screen, the screen's htmx swaps (a 409 for a
// lost lease or a closed task is shown, not dropped), and the queue page's live region fed by the
// /ws/review/ websocket.
(function () {
  "use strict";

  // Fields where a key is text, not a shortcut.
  const TYPING =
    "textarea, select, [contenteditable], input:not([type=radio]):not([type=checkbox])" +
    ":not([type=submit]):not([type=button]):not([type=hidden])";
  let rejecting = false;

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  }

  function decisionForm() {
    return document.getElementById("decision-form");
  }

  // A screen swapped in a moment ago may not be wired to htmx yet (that happens on settle): a
  // key pressed at once would submit its form as a full page. Wire it first.
  function wire(form) {
    if (window.htmx && form && !form["htmx-internal-data"]) window.htmx.process(form);
  }

  function press(selector) {
    const button = document.querySelector(`#review-screen ${selector}, .review-start ${selector}`);
    if (!button || button.disabled) return false;
    wire(button.form);
    button.click();
    return true;
  }

  function submitWith(decision) {
    const form = decisionForm();
    const button = form && form.querySelector(`button[name=decision][value=${decision}]`);
    if (!button) return;
    wire(form);
    rejecting = false;
    form.classList.remove("rejecting");
    // A click (not requestSubmit) so that htmx sends the button's decision with the form.
    button.click();
  }

  function focusEdit() {
    const area = document.querySelector("#decision-form [data-edit]");
    if (!area) return;
    const field =
      area.querySelector("[aria-invalid=true]") ||
      area.querySelector("input[type=radio]:checked") ||
      area.querySelector("input, select, textarea");
    if (field) field.focus();
  }

  function startRejecting() {
    const form = decisionForm();
    if (!form || !form.querySelector("[data-reject]")) return;
    rejecting = true;
    form.classList.add("rejecting");
    const first = form.querySelector("[data-reject] input[type=radio]");
    if (first) first.focus();
  }

  function pickReason(key) {
    const form = decisionForm();
    const radio = form && form.querySelector(`[data-reason-key="${key}"]`);
    if (!radio) return false;
    radio.checked = true;
    if (radio.value === "other") {
      rejecting = false;
      form.querySelector("[name=note]").focus();
    } else {
      submitWith("reject");
    }
    return true;
  }

  function toggleHelp() {
    const help = document.getElementById("review-help");
    if (!help) return;
    if (help.open) help.close();
    else help.showModal();
  }

  function onEnter(event, target) {
    const form = decisionForm();
    if (!form || !form.contains(target)) return false;
    const multiline = target.tagName === "TEXTAREA";
    if (multiline && !(event.ctrlKey || event.metaKey)) return false;
    if (target.closest("[data-reject]")) {
      submitWith("reject");
    } else if (target.closest("[data-edit]")) {
      submitWith("edit");
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    const target = event.target instanceof Element ? event.target : document.body;
    if (event.key === "Enter" && onEnter(event, target)) return;
    if (event.key === "Escape") {
      rejecting = false;
      const form = decisionForm();
      if (form) form.classList.remove("rejecting");
      if (target.matches(TYPING) || target.closest("#decision-form")) target.blur();
      return;
    }
    if (target.matches(TYPING) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (rejecting && /^[1-9]$/.test(event.key)) {
      if (pickReason(event.key)) event.preventDefault();
      return;
    }
    let handled = true;
    switch (event.key) {
      case "a":
        handled = press("[data-action=approve]");
        break;
      case "e":
        focusEdit();
        break;
      case "r":
        startRejecting();
        break;
      case "x":
        handled = press("[data-action=release]");
        break;
      case "s":
      case "n":
      case "j":
        // Holding a task: pass over it. Otherwise: take the next one.
        handled = press("[data-action=skip]") || press("[data-action=next]");
        break;
      case "?":
        toggleHelp();
        break;
      default:
        handled = false;
    }
    if (handled) event.preventDefault();
  });

  // A lost lease or a closed task answers 409 with the screen saying so: show it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const screen = document.getElementById("review-screen");
    if (!screen) return;
    const status = event.detail.xhr.status;
    if (status === 409) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
    rejecting = false;
    // htmx would focus the namesake of the focused field in the new screen; a refused edit
    // keeps it, but the next task must start with no field focused, so its shortcuts work.
    const focused = document.activeElement;
    if (status !== 422 && focused && screen.contains(focused)) focused.blur();
  });

  // After a refused edit, focus the first refused field.
  document.addEventListener("htmx:afterSettle", (event) => {
    const screen = document.getElementById("review-screen");
    if (!screen || !screen.contains(event.detail.elt)) return;
    const invalid = screen.querySelector("#decision-form [aria-invalid=true]");
    const focused = document.activeElement;
    if (invalid && focused !== invalid && !(focused && focused.closest("#decision-form"))) {
      invalid.focus();
      if (invalid.select) invalid.select();
    }
  });

  // --- The queue page's live region ------------------------------------------------------------

  const live = document.querySelector("[data-review-live]");
  if (!live) return;
  const status = document.querySelector("[data-live-status]");
  let pending = null;
  let delay = 1000;

  function setStatus(text) {
    if (status) status.textContent = text;
  }

  function apply(html) {
    live.innerHTML = html;
    // Regions rendered for the socket carry no CSRF field; the page's token serves them.
    const token = csrfToken();
    live.querySelectorAll("form[method=post]").forEach((form) => {
      if (form.querySelector("[name=csrfmiddlewaretoken]")) return;
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = "csrfmiddlewaretoken";
      input.value = token;
      form.appendChild(input);
    });
    if (window.htmx) window.htmx.process(live);
    live.dataset.updates = String(Number(live.dataset.updates || 0) + 1);
  }

  // Never replace a select the operator is choosing in; apply when they leave it.
  live.addEventListener("focusout", () => {
    if (pending !== null) {
      const html = pending;
      pending = null;
      setTimeout(() => apply(html), 0);
    }
  });

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + live.dataset.reviewLive);
    socket.addEventListener("open", () => {
      delay = 1000;
      setStatus("live");
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "queue") return;
      const active = document.activeElement;
      if (active && active.tagName === "SELECT" && live.contains(active)) pending = message.html;
      else apply(message.html);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403) {
        setStatus("not live");
        return;
      }
      setStatus("reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  }

  connect();
})();
