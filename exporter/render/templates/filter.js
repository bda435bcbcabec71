(function () {
  var box = document.getElementById("filter");
  var data = JSON.parse(document.getElementById("search-index").textContent);
  var rows = document.querySelectorAll("li.session");
  var sections = document.querySelectorAll("section.app");
  var shown = document.getElementById("shown");
  function apply() {
    // Split as the index's words were (letters, digits, underscore), so that typing
    // "O'Brien" or a hyphenated session id finds what the index holds.
    // Folded as the index's words were (views.filter_fold): "resume" finds "Résumé".
    var folded = box.value.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();
    var terms = folded.split(/[^\p{L}\p{N}\p{M}_]+/u).filter(Boolean);
    var n = 0;
    for (var i = 0; i < rows.length; i++) {
      var hay = data[i] || "";
      var ok = terms.every(function (t) { return hay.indexOf(t) !== -1; });
      rows[i].hidden = !ok;
      if (ok) n++;
    }
    for (var j = 0; j < sections.length; j++) {
      sections[j].hidden = !sections[j].querySelector("li.session:not([hidden])");
    }
    shown.textContent = String(n);
  }
  box.addEventListener("input", apply);
  box.disabled = false;
  apply();
})();
