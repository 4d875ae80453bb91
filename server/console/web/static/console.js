// The console's only script: it follows the server-sent events of the
// live pages, and says on the page's status line whether it is live,
// reconnecting, or ended (the session ended, or the session has too many
// live pages open). Every page works without it (reload to refresh).
"use strict";
(function () {
  var status = document.getElementById("live-status");
  var messages = {
    "live": "Live: this page follows changes as they happen.",
    "reconnecting": "Reconnecting…",
    "ended": "Session ended: nothing more appears here. Open a new one-time link (pscs admin console).",
    "too-many": "Too many open pages: this session follows only a few live pages at once. Close another console page; this one then goes live by itself."
  };
  function show(el, state) {
    el.setAttribute("data-live", state === "live" ? "on" : state);
    if (status) {
      status.setAttribute("data-state", state);
      status.textContent = messages[state];
    }
  }
  // follow opens the element's event stream; when the stream fails for
  // good (EventSource gives up on an answer other than 200, and says
  // nothing of it), /events/check tells why: 401, the session ended; 429,
  // too many streams; otherwise it tries again a little later.
  function follow(el, handle) {
    if (!window.EventSource) return;
    var es = new EventSource(el.getAttribute("data-events"));
    es.onopen = function () { show(el, "live"); };
    es.onerror = function () {
      if (es.readyState !== EventSource.CLOSED) {
        show(el, "reconnecting");
        return;
      }
      if (el.getAttribute("data-live") !== "too-many") show(el, "reconnecting");
      fetch("/events/check", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.status === 401) {
          show(el, "ended");
        } else if (r.status === 429) {
          // Live again once another page of the session closes.
          show(el, "too-many");
          setTimeout(function () { follow(el, handle); }, 10000);
        } else {
          setTimeout(function () { follow(el, handle); }, 5000);
        }
      }, function () {
        setTimeout(function () { follow(el, handle); }, 5000);
      });
    };
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
