// Sales' forms, a little easier; each works without this file.
// - Evidence: files dropped on the box join those chosen, and each is previewed (photos as
//   pictures) with a button to take it out again; the form posts the input's files as it is.
// - Customer: picking an earlier customer's number or name fills in the rest of its details.
// - The form's whereabouts: while it is on its way to Quality, the page asks again a few
//   times after a live update (the register may learn of Quality's receipt a moment later).
(function () {
  "use strict";

  function sameFile(a, b) {
    return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;
  }

  function setFiles(input, files) {
    var list = new DataTransfer();
    files.forEach(function (f) { list.items.add(f); });
    input.files = list.files;
  }

  function preview(zone, input) {
    var out = zone.querySelector(".previews");
    var removeWord = zone.getAttribute("data-remove") || "Remove";
    out.querySelectorAll("img").forEach(function (img) { URL.revokeObjectURL(img.src); });
    out.textContent = "";
    Array.prototype.forEach.call(input.files, function (file, i) {
      var li = document.createElement("li");
      if (file.type.indexOf("image/") === 0) {
        var img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.alt = file.name;
        li.appendChild(img);
      }
      var name = document.createElement("span");
      name.className = "file";
      name.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
      li.appendChild(name);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = removeWord;
      remove.setAttribute("aria-label", removeWord + ": " + file.name);
      remove.addEventListener("click", function () {
        var kept = Array.prototype.filter.call(input.files, function (_, j) { return j !== i; });
        setFiles(input, kept);
        preview(zone, input);
      });
      li.appendChild(remove);
      out.appendChild(li);
    });
  }

  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    if (!input || !window.DataTransfer) { return; }
    zone.classList.add("droppable");
    input.addEventListener("change", function () { preview(zone, input); });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      var files = Array.prototype.slice.call(input.files);
      Array.prototype.forEach.call(event.dataTransfer.files, function (f) {
        if (!files.some(function (g) { return sameFile(f, g); })) { files.push(f); }
      });
      setFiles(input, files);
      preview(zone, input);
    });
  });

  var data = document.getElementById("customer-data");
  if (data) {
    var customers = JSON.parse(data.textContent || "[]");
    var fields = { id: "f-customer_id", name: "f-customer_name",
                   contact_person: "f-contact_person", phone: "f-phone", email: "f-email",
                   language: "f-customer_language" };
    var pick = function (key, value) {
      var found = customers.filter(function (c) { return c[key] === value; })[0];
      if (!found) { return; }
      Object.keys(fields).forEach(function (k) {
        var el = document.getElementById(fields[k]);
        if (el && found[k]) { el.value = found[k]; }
      });
    };
    ["id", "name"].forEach(function (key) {
      var el = document.getElementById(fields[key]);
      if (el) { el.addEventListener("change", function () { pick(key, el.value.trim()); }); }
    });
  }

  var asks = 0;
  document.addEventListener("qms:updated", function again() {
    var where = document.getElementById("form-whereabouts");
    if (!where || where.getAttribute("data-state") !== "sent_to_quality" || asks >= 10) { return; }
    asks += 1;
    setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (resp) { return resp.ok ? resp.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var next = fresh.getElementById("form-whereabouts");
          var now = document.getElementById("form-whereabouts");
          if (next && now) { now.replaceWith(document.importNode(next, true)); }
          again();
        })
        .catch(function () { /* the next live note asks again */ });
    }, 1000);
  });
})();
