// The jobs pages follow the jobs without being reloaded by hand (the session cookie goes along):
// - a job's page polls the job's state and reloads itself when it changes, so that its attempts, errors
//   and buttons are always those of the current state;
// - the newest page of the list fetches itself again every few seconds and swaps in its counts and rows,
//   unless the visitor is using its filters (a select open, a field focused) or the tab is hidden.
(function () {
  "use strict";

  function later(fn, ms) { window.setTimeout(fn, ms); }

  var job = document.getElementById("job");
  if (job && job.getAttribute("data-final") !== "true") {
    var stateUrl = job.getAttribute("data-state-url");
    var shown = job.getAttribute("data-state");
    (function poll() {
      fetch(stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          if (data.state !== shown) window.location.reload();
          else later(poll, 1000);
        })
        .catch(function () { later(poll, 5000); });  // the server restarts: keep trying, slower
    })();
  }

  var live = document.getElementById("jobs-live");
  var listUrl = live && live.getAttribute("data-live-url");
  if (listUrl) {
    (function refresh() {
      if (document.hidden || live.contains(document.activeElement)) {
        later(refresh, 3000);
        return;
      }
      fetch(listUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("jobs-live");
          if (fresh && fresh.innerHTML !== live.innerHTML && !live.contains(document.activeElement)) {
            live.innerHTML = fresh.innerHTML;
          }
          later(refresh, 3000);
        })
        .catch(function () { later(refresh, 10000); });
    })();
  }
})();
