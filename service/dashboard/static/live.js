// Live parts: every element with data-live="<name>" is fetched again from this page's address
// with ?part=<name> every data-refresh-ms milliseconds (times data-live-every, for parts that
// cost more and change slowly) and replaced in place (no page reload).
(() => {
  "use strict";
  const every = Number(document.body.dataset.refreshMs || 2000);
  const stamp = document.getElementById("live-stamp");
  const last = new Map();
  let tick = 0;
  let busy = false; // a slow answer never piles up requests behind it

  async function refreshPart(element) {
    const url = new URL(window.location.href);
    url.searchParams.set("part", element.dataset.live);
    const response = await fetch(url, { headers: { "X-Live": "1" }, credentials: "same-origin" });
    if (response.status === 401) {
      const next = encodeURIComponent(window.location.pathname);
      window.location.assign(`/dashboard/login?next=${next}`);
      return false;
    }
    if (!response.ok) {
      element.classList.add("stale");
      return false;
    }
    const html = await response.text();
    element.classList.remove("stale");
    if (last.get(element) !== html) {
      last.set(element, html);
      element.innerHTML = html;
    }
    return true;
  }

  async function refresh() {
    if (document.hidden || busy) return;
    busy = true;
    tick += 1;
    const due = (element) => tick % Number(element.dataset.liveEvery || 1) === 0;
    const parts = [...document.querySelectorAll("[data-live]")].filter(due);
    try {
      const results = await Promise.all(parts.map(refreshPart));
      if (stamp) {
        const ok = results.every(Boolean);
        stamp.textContent = `${ok ? "live" : "some parts stale"} · ${new Date().toLocaleTimeString()}`;
        stamp.classList.toggle("stale", !ok);
      }
    } catch (error) {
      if (stamp) {
        stamp.textContent = `offline · ${new Date().toLocaleTimeString()}`;
        stamp.classList.add("stale");
      }
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, every);
})();
