// Live updates: the console's Server-Sent Events say which complaint changed; parts of the
// page marked data-live="<event type prefixes>" are fetched again and replaced, a record's
// page says it has changed (its forms keep what is being typed).
// A page shown after a refused form sits at the form's POST address (a GET there is 405): it
// names its record's page in data-live-url, and the parts are fetched from there. A part
// holding a field being typed in, or one the service refused, is left as it is.
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

  // The address this page is read from; null for a refused form that names none.
  function pageUrl() {
    var here = window.location.href;
    var named = document.querySelector("[data-live-url]");
    if (!named) { return document.getElementById("error") ? null : here; }
    var url = new URL(named.getAttribute("data-live-url"), here);
    return url.pathname === window.location.pathname ? here : url.href;
  }

  function holdsTyping(el) {
    var active = document.activeElement;
    return (active && active !== document.body && el.contains(active)) ||
      el.querySelector("[aria-invalid=true], #error") !== null;
  }

  function refresh(ids) {
    var url = pageUrl();
    if (url === null) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (resp) { return resp.ok ? resp.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = fresh.getElementById(id);
          if (now && next && !holdsTyping(now)) { now.replaceWith(document.importNode(next, true)); }
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
    var url = pageUrl();
    if (document.getElementById("on-its-way") && ids.indexOf("on-its-way") >= 0) {
      if (url !== null) { window.location.assign(url); }  // never a POST sent again
      return;
    }
    var changed = document.getElementById("changed");
    if (changed && changed.getAttribute("data-feedback") === note.feedback_id) {
      var reload = changed.querySelector("a");
      if (reload && url !== null) { reload.href = url; }
      changed.hidden = false;
    }
    if (ids.length) {
      clearTimeout(pending);  // several notes at once: one fetch
      pending = setTimeout(function () { refresh(ids); }, 150);
    }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
