// Per-item drill-down: rendered on demand from the JSON data island, 25 items per page.
// Every value from data or model output goes through textContent, never innerHTML.
(function () {
  "use strict";
  var raw = document.getElementById("laf-data");
  if (!raw) return;
  var data = JSON.parse(raw.textContent);
  var items = data.items, suites = data.suites, names = data.models;
  var PAGE = 25, page = 0, shown = [];
  var $ = function (id) { return document.getElementById(id); };
  var el = function (tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  var FLIP = {0: ["same", "unchanged"], 1: ["lost", "lost: base right, adapter wrong"], 2: ["found", "found: base wrong, adapter right"],
              3: ["lost", "worse"], 4: ["found", "better"]};
  var fmt = function (v) { return (v === null || v === undefined) ? "" : (typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3)) : String(v)); };

  function matches(it, flt, suite, q) {
    if (suite !== "" && String(it[0]) !== suite) return false;
    if (flt === "lost" && !(it[2] === 1 || it[2] === 3)) return false;
    if (flt === "found" && !(it[2] === 2 || it[2] === 4)) return false;
    if (flt === "flips" && it[2] === 0) return false;
    if (flt === "same" && it[2] !== 0) return false;
    if (q) {
      var hay = (JSON.stringify(it[3]) + " " + JSON.stringify(it[4]) + " " + JSON.stringify(it[5]) + " " + (it[12] || "") + " " + (it[13] || "")).toLowerCase();
      if (hay.indexOf(q) < 0) return false;
    }
    return true;
  }

  function renderItem(it) {
    var d = el("details", "item");
    d.setAttribute("data-flip", String(it[2]));
    var s = el("summary");
    var f = FLIP[it[2]] || FLIP[0];
    s.appendChild(el("span", "tag " + f[0], f[1]));
    s.appendChild(el("span", "mono muted", (suites[it[0]] || "?") + " #" + it[1]));
    var p = Array.isArray(it[3]) ? it[3][0] : it[3];
    s.appendChild(el("span", "", String(p || "").replace(/\s+/g, " ").slice(0, 140)));
    d.appendChild(s);
    d.addEventListener("toggle", function () {
      if (!d.open || d.querySelector(".body")) return;
      var b = el("div", "body");
      b.appendChild(el("h3", "", "prompt"));
      b.appendChild(el("pre", "", Array.isArray(it[3]) ? it[3].join("\n---\n") : it[3]));
      if (it[4]) {
        var t = el("table"), hr = el("tr");
        ["choice", names.base + " log-lik", names.candidate ? names.candidate + " log-lik" : null].forEach(function (h) { if (h) hr.appendChild(el("th", "", h)); });
        t.appendChild(hr);
        it[4].forEach(function (c, i) {
          var tr = el("tr", i === it[5] ? "gold" : "");
          tr.appendChild(el("td", "mono", c));
          var bl = it[6] ? it[6][i] : null, cl = it[7] ? it[7][i] : null;
          var bt = el("td", "num", fmt(bl) + (it[8] === i ? "  ← base" : ""));
          tr.appendChild(bt);
          if (names.candidate) tr.appendChild(el("td", "num", fmt(cl) + (it[9] === i ? "  ← adapter" : "")));
          t.appendChild(tr);
        });
        b.appendChild(t);
      } else {
        b.appendChild(el("div", "muted", "target: " + JSON.stringify(it[5])));
      }
      if (it[12] !== null || it[13] !== null) {
        b.appendChild(el("h3", "", "generations"));
        b.appendChild(el("div", "muted", names.base));
        b.appendChild(el("pre", "", it[12]));
        if (names.candidate) { b.appendChild(el("div", "muted", names.candidate)); b.appendChild(el("pre", "", it[13])); }
      }
      b.appendChild(el("div", "muted", "score: " + names.base + " " + fmt(it[10]) + (names.candidate ? " · " + names.candidate + " " + fmt(it[11]) : "")));
      d.appendChild(b);
    });
    return d;
  }

  function render() {
    var list = $("items-list");
    list.textContent = "";
    var start = page * PAGE;
    shown.slice(start, start + PAGE).forEach(function (it) { list.appendChild(renderItem(it)); });
    $("items-count").textContent = shown.length + " item(s)" + (shown.length > PAGE ? " · page " + (page + 1) + " of " + Math.ceil(shown.length / PAGE) : "");
    $("prev").disabled = page === 0;
    $("next").disabled = start + PAGE >= shown.length;
  }

  function apply() {
    var flt = $("flt-flip").value, suite = $("flt-suite").value, q = $("flt-q").value.trim().toLowerCase();
    shown = items.filter(function (it) { return matches(it, flt, suite, q); });
    page = 0;
    render();
  }

  var sel = $("flt-suite");
  suites.forEach(function (name, i) { var o = el("option", "", name); o.value = String(i); sel.appendChild(o); });
  ["flt-flip", "flt-suite"].forEach(function (id) { $(id).addEventListener("change", apply); });
  var timer = null;
  $("flt-q").addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 150); });
  $("prev").addEventListener("click", function () { if (page > 0) { page--; render(); } });
  $("next").addEventListener("click", function () { if ((page + 1) * PAGE < shown.length) { page++; render(); } });
  window.addEventListener("beforeprint", function () { document.querySelectorAll("details.item").forEach(function (d) { d.open = true; }); });
  apply();
})();
