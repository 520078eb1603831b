// Live pages: the server says when the database changed (server-sent events on /live);
// the page then fetches itself again and swaps in its #live part. Filters being typed
// into sit outside that part and keep their state. No inline script anywhere: the
// Content-Security-Policy allows only this file.
(function () {
  "use strict";
  var region = document.getElementById("live");
  var badge = document.getElementById("live-state");
  if (!window.EventSource) {
    if (badge) { badge.textContent = "static"; badge.classList.add("stale"); }
    return;
  }
  var busy = false;
  var again = false;
  function refresh() {
    if (!region) { return; }
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Cairn-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (fresh) {
          region.replaceChildren.apply(region, Array.prototype.slice.call(fresh.childNodes));
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var events = new EventSource("/live");
  events.onopen = function () {
    if (badge) { badge.textContent = "live"; badge.classList.remove("stale"); }
  };
  events.onerror = function () {
    if (badge) { badge.textContent = "reconnecting"; badge.classList.add("stale"); }
  };
  events.onmessage = refresh;
})();
