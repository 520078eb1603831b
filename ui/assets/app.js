// Live pages: every two seconds, while the tab is visible, ask /live where the database's
// log stands; when it moved, fetch this page again and swap in its #live part. Filters
// being typed into sit outside that part and keep their state. No inline script anywhere:
// the Content-Security-Policy allows only this file.
(function () {
  "use strict";
  var EVERY_MS = 2000;
  var region = document.getElementById("live");
  var badge = document.getElementById("live-state");
  var seen = null;
  var busy = false;

  function state(text, stale) {
    if (!badge) { return; }
    badge.textContent = text;
    badge.classList.toggle("stale", stale);
  }

  function redraw() {
    return fetch(window.location.href, { credentials: "same-origin", headers: { "X-Cairn-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null || !region) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (fresh) {
          region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      });
  }

  function look() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch("/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (position) {
        state("live", false);
        var moved = seen !== null && position !== seen;
        seen = position;
        return moved ? redraw() : null;
      })
      .catch(function () { state("reconnecting", true); })
      .then(function () { busy = false; });
  }

  if (!region || !window.fetch || !window.DOMParser) {
    state("static", true);
    return;
  }
  look();
  window.setInterval(look, EVERY_MS);
  document.addEventListener("visibilitychange", look);
})();
