// aicloud console: charts (uPlot), live job pages (server-sent events), uploads with progress,
// run selection. No inline scripts anywhere: page data comes in <script type="application/json">.
(function () {
  "use strict";
  var COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#5d6d7e", "#c0392b", "#27ae60", "#d35400", "#2c3e50"];

  var STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8];

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx: every request this page makes carries the session's CSRF token.
  document.addEventListener("htmx:configRequest", function (e) { e.detail.headers["X-CSRF-Token"] = csrf(); });

  // Series with their own steps become uPlot's aligned columns: the union of steps, null where a
  // series has no point (drawn across, spanGaps).
  function align(series) {
    var seen = {}, xs = [];
    series.forEach(function (s) { s.steps.forEach(function (x) { if (!seen[x]) { seen[x] = true; xs.push(x); } }); });
    xs.sort(function (a, b) { return a - b; });
    var cols = [xs];
    series.forEach(function (s) {
      var at = {};
      s.steps.forEach(function (x, i) { at[x] = s.values[i]; });
      cols.push(xs.map(function (x) { return at[x] === undefined ? null : at[x]; }));
    });
    return cols;
  }

  // ``extra.scatter``: points only (a param against the objective); ``extra.xlabel``: the x axis.
  function makeChart(el, series, extra) {
    extra = extra || {};
    var width = Math.max(el.clientWidth - 16, 280), xlabel = extra.xlabel || "step";
    var opts = {
      width: width, height: 220, scales: { x: { time: false } }, legend: { show: series.length > 1 || !!extra.scatter },
      series: [{ label: xlabel }].concat(series.map(function (s, i) {
        var color = COLORS[i % COLORS.length];
        if (extra.scatter) return { label: s.label, stroke: color, fill: color, paths: function () { return null; }, points: { show: true, size: 8, fill: color } };
        return { label: s.label, stroke: color, width: 1.5, spanGaps: true };  // points drawn while sparse
      })),
      // steps are whole numbers: no tick at 0.5
      axes: [extra.scatter ? { label: xlabel } : { label: xlabel, incrs: STEP_INCRS }, {}],
    };
    var plot = new uPlot(opts, align(series), el);
    el.dataset.points = String(series.reduce(function (n, s) { return n + s.steps.length; }, 0));
    return plot;
  }

  function staticCharts() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var blob = document.getElementById(el.dataset.chart);
      if (!blob) return;
      var spec = JSON.parse(blob.textContent);
      makeChart(el, spec.series, spec);
    });
  }

  // A job page: status, log and metrics arrive as server-sent events; each metric's chart grows.
  function liveJob(root) {
    var charts = {}, total = 0;
    var box = document.getElementById("charts"), log = document.getElementById("log");
    var counter = document.getElementById("points"), none = document.getElementById("no-metrics");
    var source = new EventSource(root.dataset.events);
    var started = null, finished = null, dur = document.getElementById("job-duration");
    function tick() {  // the job's duration, counting while it runs
      if (!started) return;
      var s = Math.max(0, Math.floor((finished || Date.now() / 1000) - started));
      var m = Math.floor(s / 60);
      dur.textContent = s >= 3600 ? Math.floor(s / 3600) + "h" + String(m % 60).padStart(2, "0") + "m"
        : m + "m" + String(s % 60).padStart(2, "0") + "s";
    }
    var timer = setInterval(tick, 1000);
    source.addEventListener("status", function (e) {
      var d = JSON.parse(e.data);
      started = d.started || null; finished = d.finished || null; tick();
      if (finished) clearInterval(timer);
      var badge = document.querySelector("#job-status .badge");
      if (badge) { badge.textContent = d.status; badge.className = "badge s-" + d.status; }
      var cancel = document.getElementById("cancel-form");
      if (cancel && ["succeeded", "failed", "cancelled"].indexOf(d.status) >= 0) cancel.remove();
      var msg = document.getElementById("job-message");
      if (msg && d.message) { msg.textContent = d.message; msg.hidden = false; }
    });
    source.addEventListener("log", function (e) {
      var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent += JSON.parse(e.data);
      if (stick) log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("metrics", function (e) {
      var d = JSON.parse(e.data);
      Object.keys(d).sort().forEach(function (name) {
        var m = d[name], c = charts[name];
        if (!c) {
          if (none) { none.remove(); none = null; }
          var el = document.createElement("div");
          el.className = "chart"; el.dataset.metric = name;
          var title = document.createElement("div");
          title.className = "chart-title"; title.textContent = name;
          el.appendChild(title);
          // the script's own metrics first, in name order; the job's system/* metrics after them
          var rank = function (n) { return (n.indexOf("system/") === 0 ? "1" : "0") + n; };
          var before = Array.prototype.find.call(box.querySelectorAll(".chart"), function (other) {
            return rank(other.dataset.metric) > rank(name);
          });
          box.insertBefore(el, before || null);
          c = charts[name] = { el: el, s: { label: name, steps: [], values: [] }, plot: null };
        }
        if (m.reset) { total -= c.s.steps.length; c.s.steps = []; c.s.values = []; }
        c.s.steps = c.s.steps.concat(m.steps); c.s.values = c.s.values.concat(m.values);
        total += m.steps.length;
        if (!c.plot) c.plot = makeChart(c.el, [c.s]);
        else c.plot.setData(align([c.s]));
        c.el.dataset.points = String(c.s.steps.length);
      });
      counter.textContent = total + " points";
      counter.dataset.points = String(total);
    });
    source.addEventListener("end", function () { source.close(); root.dataset.ended = "1"; });
  }

  // Runs table: pick 2 to N runs, then compare.
  function comparePicker(form) {
    var max = parseInt(form.dataset.max, 10), btn = document.getElementById("compare-btn");
    var note = document.getElementById("compare-count");
    function update() {
      var n = form.querySelectorAll("input.pick:checked").length;
      btn.disabled = n < 2 || n > max;
      note.textContent = n > max ? "at most " + max + " runs" : n + " selected";
    }
    form.addEventListener("change", update);
    update();
  }

  // Upload a file with a progress bar (XHR shows upload progress; fetch does not).
  function uploader(form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var file = form.querySelector('input[type="file"]').files[0];
      var name = form.querySelector('input[name="name"]').value.trim();
      var bar = form.querySelector(".progress > div"), out = form.querySelector(".upload-status");
      if (!file || !name) { out.textContent = "Pick a file and a dataset name."; return; }
      var body = new FormData();
      body.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", "/datasets/" + encodeURIComponent(name) + "/upload");
      xhr.setRequestHeader("X-CSRF-Token", csrf());
      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) bar.style.width = (100 * ev.loaded / ev.total).toFixed(1) + "%";
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 200 || xhr.status === 201) {
          bar.style.width = "100%";
          window.location.href = JSON.parse(xhr.responseText).location;
        } else {
          var msg = "upload failed (" + xhr.status + ")";
          var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
          var said = doc.querySelector(".error-card p");
          if (said) msg = said.textContent;
          out.textContent = msg; out.className = "upload-status flash err";
        }
      });
      xhr.addEventListener("error", function () { out.textContent = "upload failed: the connection broke"; });
      out.textContent = "Uploading " + file.name + "…"; out.className = "upload-status muted";
      xhr.send(body);
    });
  }

  // A deployment page: the first traffic fragment carries the last hour by minute (the gateway's
  // history), each one a sample of now; the charts start from the history and grow.
  function trafficCharts() {
    var rateEl = document.getElementById("traffic-rate"), latEl = document.getElementById("traffic-latency");
    var repEl = document.getElementById("traffic-replicas");
    if (!rateEl || !latEl || !repEl) return;
    var t = [], rate = [], p50 = [], p99 = [], ready = [], rPlot = null, lPlot = null, nPlot = null;
    function timeChart(el, series) {
      return new uPlot({
        width: Math.max(el.clientWidth - 16, 280), height: 180, scales: { x: { time: true } },
        series: [{}].concat(series.map(function (s, i) { return { label: s, stroke: COLORS[i], width: 1.5 }; })),
      }, [[]].concat(series.map(function () { return []; })), el);
    }
    document.body.addEventListener("htmx:afterSwap", function (e) {
      if (e.detail.target.id !== "traffic") return;
      var table = document.getElementById("traffic-table");  // htmx drops <script> from fragments
      if (!table || !table.dataset.sample) return;
      var s = JSON.parse(table.dataset.sample);
      if (!t.length && table.dataset.history) {  // the first fragment: start from the last hour, by minute
        JSON.parse(table.dataset.history).forEach(function (m) {
          if (m.t < s.t - 60) { t.push(m.t); rate.push(m.rate); p50.push(m.p50); p99.push(m.p99); ready.push(m.replicas); }
        });
      }
      t.push(s.t); rate.push(s.rate); p50.push(s.p50); p99.push(s.p99); ready.push(s.replicas);
      if (t.length > 720) { t.shift(); rate.shift(); p50.shift(); p99.shift(); ready.shift(); }
      if (!rPlot) {
        rPlot = timeChart(rateEl, ["req/s"]); lPlot = timeChart(latEl, ["p50", "p99"]); nPlot = timeChart(repEl, ["ready"]);
      }
      rPlot.setData([t, rate]); lPlot.setData([t, p50, p99]); nPlot.setData([t, ready]);
      rateEl.dataset.samples = String(t.length);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    trafficCharts();
    staticCharts();
    var live = document.getElementById("job-live");
    if (live) liveJob(live);
    var cmp = document.getElementById("compare-form");
    if (cmp) comparePicker(cmp);
    document.querySelectorAll("form[data-upload]").forEach(uploader);
    var only = document.getElementById("only-diff");
    if (only) only.addEventListener("change", function () {
      document.getElementById("params-diff").classList.toggle("only-diff", only.checked);
    });
  });
})();
