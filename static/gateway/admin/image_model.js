// The image-model form shows the fields of the chosen provider: when the provider changes, reload
// the page for it (?provider=...), keeping what was typed in the first fields of a new entity
// (a change page ignores them: its values come from the database).
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var select = document.getElementById("id_provider");
  if (!select) {
    return;
  }
  select.addEventListener("change", function () {
    var params = new URLSearchParams(window.location.search);
    params.set("provider", select.value);
    ["id", "name", "description"].forEach(function (name) {
      var field = document.getElementById("id_" + name);
      if (field && field.value) {
        params.set(name, field.value);
      }
    });
    window.location.search = params.toString();
  });
});
