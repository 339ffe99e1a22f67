// The import page: draw the bar, then poll the import's progress (with the session cookie) and move the
// bar, the counts and the distribution without reloading, until the import is over.
(function () {
  "use strict";
  var root = document.getElementById("import");
  if (!root) return;
  var url = root.getAttribute("data-progress-url");
  var delay = 1000;

  function setText(name, value) {
    var el = root.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = value;
  }

  function show(selector, visible) {
    document.querySelectorAll(selector).forEach(function (el) { el.hidden = !visible; });
  }

  var bar = root.querySelector(".progress");

  function setBar(percent) {
    bar.setAttribute("aria-valuenow", percent);
    bar.querySelector(".progress-bar").style.width = percent + "%";
  }

  function render(p) {
    setBar(p.percent);
    var status = root.querySelector('[data-field="status"]');
    status.textContent = p.status;
    status.className = "status status-" + p.status;
    ["percent", "processed_rows", "successful_rows", "failed_rows", "duplicate_rows"].forEach(function (name) {
      setText(name, p[name]);
    });
    setText("total_rows", p.total_rows || "…");
    var error = root.querySelector('[data-field="error"]');
    error.textContent = p.error || "";
    error.hidden = !p.error;
    show('[data-when="rejected"]', p.rejected_rows > 0);
    show('[data-when="no-rejected"]', p.rejected_rows === 0);
    if (p.final) {
      document.querySelectorAll('[data-when="no-rejected"]').forEach(function (el) {
        el.textContent = "No row was rejected.";
      });
    }
    var body = document.getElementById("distribution");
    body.replaceChildren.apply(body, p.distribution_rows.map(function (row) {
      var tr = document.createElement("tr");
      var who = document.createElement("td");
      var leads = document.createElement("td");
      who.textContent = row.email;
      leads.textContent = row.leads;
      leads.className = "num";
      tr.append(who, leads);
      return tr;
    }));
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (p) {
        render(p);
        delay = 1000;
        if (!p.final) setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 30000);  // the server may be restarting: back off, keep trying
        setTimeout(poll, delay);
      });
  }

  // The page's own figure first: the Content-Security-Policy refuses a style attribute in the markup.
  setBar(bar.getAttribute("aria-valuenow"));
  if (root.getAttribute("data-final") !== "true") setTimeout(poll, delay);
})();
