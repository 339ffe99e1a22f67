// The job page: while the job is not over, poll its state (with the session cookie) and reload the page
// when it changes, so that its attempts, errors and buttons are always those of the current state.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || root.getAttribute("data-final") === "true") return;
  var url = root.getAttribute("data-state-url");
  var shown = root.getAttribute("data-state");

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (job) {
        if (job.state !== shown) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () { window.setTimeout(poll, 5000); });  // the server restarts: keep trying, slower
  }
  window.setTimeout(poll, 1000);
})();
