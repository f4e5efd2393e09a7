// Live updates: the console's Server-Sent Events say which complaint changed; parts of the
// page marked data-live="<event type prefixes>" are fetched again and replaced, a record's
// page says it has changed (its forms keep what is being typed).
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var source = new EventSource("/live");
  var pending = null;
  source.addEventListener("open", function () {
    document.documentElement.setAttribute("data-live", "on");  // listening (tests wait for it)
  });

  function wanted(el, note) {
    var prefixes = (el.getAttribute("data-live") || "").split(",");
    var feedback = el.getAttribute("data-feedback");
    if (feedback && feedback !== note.feedback_id) { return false; }
    return prefixes.some(function (p) { return p && note.type.indexOf(p) === 0; });
  }

  function refresh(ids) {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (resp) { return resp.ok ? resp.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(document.importNode(next, true)); }
        });
        var status = document.getElementById("live-status");
        if (status) { status.textContent = status.getAttribute("data-updated"); }
        document.dispatchEvent(new CustomEvent("qms:updated"));
      })
      .catch(function () { /* the next note tries again */ });
  }

  source.addEventListener("changed", function (event) {
    var note = JSON.parse(event.data);
    var ids = [];
    document.querySelectorAll("[data-live]").forEach(function (el) {
      if (el.id && wanted(el, note)) { ids.push(el.id); }
    });
    if (document.getElementById("on-its-way") && ids.indexOf("on-its-way") >= 0) {
      window.location.reload();
      return;
    }
    var changed = document.getElementById("changed");
    if (changed && changed.getAttribute("data-feedback") === note.feedback_id) {
      changed.hidden = false;
    }
    if (ids.length) {
      clearTimeout(pending);  // several notes at once: one fetch
      pending = setTimeout(function () { refresh(ids); }, 150);
    }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
