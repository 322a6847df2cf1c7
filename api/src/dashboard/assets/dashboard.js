// Switchyard dashboard: the live overview (server-sent events) and the light/dark switch.
// Everything else is plain HTML forms and links, usable without this script.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = localStorage.getItem("sy-theme");
  if (saved) root.setAttribute("data-theme", saved);

  function rate(done, failed) {
    return done + failed === 0 ? "—" : (100 * failed / (done + failed)).toFixed(1) + " %";
  }
  var fields = {
    pending: function (q) { return q.pending; },
    due: function (q) { return q.due; },
    redis_ready: function (q) { return q.redis_ready; },
    running: function (q) { return q.running; },
    waiting: function (q) { return q.waiting; },
    dead: function (q) { return q.dead; },
    latency: function (q) { return q.latency_seconds.toFixed(1) + " s"; },
    lag: function (q) { return q.oldest_due_age_seconds.toFixed(1) + " s"; },
    done_minute: function (q) { return q.done_minute; },
    failed_minute: function (q) { return q.failed_minute; },
    done_hour: function (q) { return q.done_hour; },
    fail_rate_hour: function (q) { return rate(q.done_hour, q.failed_hour); },
    done_day: function (q) { return q.done_day; },
    fail_rate_day: function (q) { return rate(q.done_day, q.failed_day); }
  };

  function live() {
    var table = document.getElementById("overview");
    if (!table || !window.EventSource) return;
    var status = document.querySelector(".live");
    var at = document.getElementById("live-at");
    var source = new EventSource("/dashboard/live");
    source.onmessage = function (msg) {
      var o = JSON.parse(msg.data);
      if (!o.at) return;
      status.classList.remove("stale");
      at.textContent = o.at.replace("T", " ").slice(0, 19);
      o.queues.forEach(function (q) {
        var row = table.querySelector('tr[data-q="' + q.queue + '"]');
        if (!row) return;
        Object.keys(fields).forEach(function (f) {
          var cell = row.querySelector('[data-f="' + f + '"]');
          var text = String(fields[f](q));
          if (cell && cell.textContent !== text) cell.textContent = text;
        });
        var badge = row.querySelector('[data-f="status"] .badge');
        var state = q.paused ? "paused" : "active";
        if (badge && badge.textContent !== state) {
          badge.textContent = state;
          badge.className = "badge " + state;
          // Paused or resumed elsewhere: the button follows.
          var form = row.querySelector('form[action*="/queues/"]');
          if (form) {
            var action = q.paused ? "resume" : "pause";
            form.action = "/dashboard/queues/" + q.queue + "/" + action;
            form.querySelector("button").textContent = q.paused ? "Resume" : "Pause";
          }
        }
      });
    };
    source.onerror = function () { status.classList.add("stale"); };
  }

  // Pages showing work in progress say so (data-refresh on <main>): their content is fetched
  // again until it shows none, unless someone is using a form.
  function refresh() {
    var main = document.getElementById("main");
    var every = main && Number(main.getAttribute("data-refresh"));
    if (!every) return;
    var timer = setInterval(function () {
      if (!main.getAttribute("data-refresh")) { clearInterval(timer); return; }
      var focused = document.activeElement;
      if (focused && focused.form) return;
      fetch(location.href, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
          if (!next) return;
          main.innerHTML = next.innerHTML;
          if (!next.getAttribute("data-refresh")) main.removeAttribute("data-refresh");
        });
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme");
    if (button) {
      button.addEventListener("click", function () {
        var dark = root.getAttribute("data-theme") === "dark" ||
          (!root.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
        var next = dark ? "light" : "dark";
        root.setAttribute("data-theme", next);
        localStorage.setItem("sy-theme", next);
      });
    }
    // Keyboard: "/" focuses the first search or filter field, "g" then "o"/"j"/"d"/"w" go to
    // the overview, jobs, dead jobs and workers.
    var pending = false;
    document.addEventListener("keydown", function (e) {
      var t = e.target.tagName;
      if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        var field = document.querySelector("form.filters input, form.filters select");
        if (field) { e.preventDefault(); field.focus(); }
      } else if (e.key === "g") {
        pending = true;
        setTimeout(function () { pending = false; }, 1000);
      } else if (pending) {
        var to = { o: "/dashboard", j: "/dashboard/jobs", d: "/dashboard/dead", w: "/dashboard/workers" }[e.key];
        pending = false;
        if (to) location.href = to;
      }
    });
    live();
    refresh();
  });
})();
