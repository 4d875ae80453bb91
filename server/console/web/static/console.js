// The console's only script: it follows the server-sent events of the
// live pages. Every page works without it (reload to refresh).
"use strict";
(function () {
  function follow(el, handle) {
    if (!window.EventSource) return;
    var es = new EventSource(el.getAttribute("data-events"));
    es.onerror = function () { el.setAttribute("data-live", "reconnecting"); };
    es.onopen = function () { el.setAttribute("data-live", "on"); };
    handle(es);
  }
  var cards = document.getElementById("cards");
  if (cards && cards.hasAttribute("data-events")) {
    follow(cards, function (es) {
      es.addEventListener("cards", function (e) { cards.innerHTML = e.data; });
    });
  }
  var records = document.getElementById("records");
  if (records && records.hasAttribute("data-events")) {
    follow(records, function (es) {
      es.addEventListener("record", function (e) {
        var body = records.tBodies[0];
        var t = document.createElement("tbody");
        t.innerHTML = e.data;
        var tr = t.firstElementChild;
        if (!tr || body.querySelector('tr[data-seq="' + tr.getAttribute("data-seq") + '"]')) return;
        tr.classList.add("new");
        body.insertBefore(tr, body.firstChild);
      });
    });
  }
})();
