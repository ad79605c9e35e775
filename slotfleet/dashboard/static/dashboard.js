// slotfleet dashboard: keeps each live region ([data-live]) fresh by fetching its
// fragment (server-rendered, escaped HTML) every refresh interval, and sends actions
// ([data-action] buttons, [data-action-form] forms) with the token kept in this tab's
// sessionStorage. No page reloads; nothing from a response is run as code.
"use strict";
(function () {
  const body = document.body;
  const refreshMs = Math.max(500, Number(body.dataset.refresh) || 2000);
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");
  const TOKEN_KEY = "slotfleet.token";
  let timer = null;
  let busy = false;

  function setLive(state, title) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = state === "ok" ? "live" : state === "error" ? "offline" : "live";
    if (title) live.title = title;
  }

  function say(text, kind) {
    if (!notice) return;
    notice.textContent = text;
    notice.dataset.kind = kind;
    notice.hidden = false;
  }

  async function refreshOne(region) {
    const response = await fetch(region.dataset.live, {
      headers: { Accept: "text/html" },
      cache: "no-store",
      credentials: "same-origin",
    });
    const html = await response.text();
    if (!response.ok && response.status !== 404) {
      throw new Error(`${response.status}: ${html.replace(/<[^>]*>/g, "").trim()}`);
    }
    region.innerHTML = html;
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const regions = Array.from(document.querySelectorAll("[data-live]"));
      await Promise.all(regions.map(refreshOne));
      setLive("ok", `updated ${new Date().toLocaleTimeString()}`);
      body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
    } catch (error) {
      setLive("error", `not updated: ${error.message}`);
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async function tick() {
      if (!document.hidden) await refresh();
      timer = setTimeout(tick, refreshMs);
    }, refreshMs);
  }

  async function act(url, payload) {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    let data = {};
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify(payload || {}),
        cache: "no-store",
        credentials: "same-origin",
      });
      data = await response.json().catch(() => ({}));
    } catch (error) {
      say(`not sent: ${error.message}`, "error");
      return;
    }
    if (response.ok) {
      say(data.message || "done", "ok");
    } else {
      say(`refused (${response.status}): ${data.error || response.statusText}`, "error");
    }
    await refresh();
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.preventDefault();
    act(button.dataset.action, {});
  });

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.id === "token-form") {
      event.preventDefault();
      const input = form.querySelector("input");
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      say("token kept for this tab", "ok");
      return;
    }
    if (form.dataset.actionForm) {
      event.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const payload = {};
      new FormData(form).forEach(function (value, key) { payload[key] = String(value).trim(); });
      act(form.dataset.actionForm, payload);
    }
  });

  const go = document.getElementById("goto");
  if (go) {
    go.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && /^\d+$/.test(go.value)) {
        event.preventDefault();
        window.location.assign(`/jobs/${go.value}`);
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
  setLive("ok");
  schedule();
})();
