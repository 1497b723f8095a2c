/* netdissect report: filter, search and sort of the unit gallery and the concept index.
 * Plain JavaScript, no dependencies. The page's data is a JSON block (#nd-data) whose
 * items name the element ids of the cards / rows; text is only ever set with textContent. */
(function () {
  "use strict";

  /* The sticky toolbar sits right under the top bar, whose height depends on how the menu wraps. */
  var topbar = document.querySelector(".topbar");
  function syncTopbar() {
    if (topbar) { document.documentElement.style.setProperty("--topbar-h", topbar.offsetHeight + "px"); }
  }
  window.addEventListener("resize", syncTopbar);
  syncTopbar();

  var dataNode = document.getElementById("nd-data");
  var grid = document.getElementById("nd-grid");
  if (!dataNode || !grid) { return; }
  var data = JSON.parse(dataNode.textContent);
  var items = data.items.map(function (item, order) {
    return {
      el: document.getElementById(item.id),
      unit: item.unit,
      text: (String(item.label) + (item.words ? " " + item.words : "")).toLowerCase(),
      cat: item.cat,
      score: item.score,
      det: item.det,
      order: order
    };
  }).filter(function (item) { return item.el !== null; });
  var container = items.length ? items[0].el.parentNode : grid;

  var search = document.getElementById("nd-search");
  var sort = document.getElementById("nd-sort");
  var detectors = document.getElementById("nd-detectors");
  var count = document.getElementById("nd-count");
  var empty = document.getElementById("nd-empty");
  var reset = document.getElementById("nd-reset");
  var chips = Array.prototype.slice.call(document.querySelectorAll(".chip[data-cat]"));
  var category = "";
  var noun = data.kind === "units" ? "units" : "concepts";

  function matches(item, query, unitQuery) {
    if (category && item.cat !== category) { return false; }
    if (detectors && detectors.checked && !item.det) { return false; }
    if (!query) { return true; }
    if (unitQuery !== null && item.unit === unitQuery) { return true; }
    return item.text.indexOf(query) !== -1;
  }

  function apply() {
    var raw = search ? search.value.trim().toLowerCase() : "";
    var unitQuery = null;
    if (data.kind === "units" && /^#?\d+$/.test(raw)) { unitQuery = parseInt(raw.replace("#", ""), 10); }
    var shown = 0;
    for (var i = 0; i < items.length; i++) {
      var ok = matches(items[i], raw, unitQuery);
      items[i].el.hidden = !ok;
      if (ok) { shown++; }
    }
    if (count) {
      count.textContent = shown === items.length
        ? items.length + " " + noun
        : "Showing " + shown + " of " + items.length + " " + noun;
    }
    if (empty) { empty.hidden = shown !== 0; }
  }

  function reorder() {
    var key = sort ? sort.value : "score";
    var sorted = items.slice().sort(function (a, b) {
      if (key === "unit") { return a.unit - b.unit; }
      return (b.score - a.score) || (a.order - b.order);
    });
    var frag = document.createDocumentFragment();
    sorted.forEach(function (item) { frag.appendChild(item.el); });
    container.appendChild(frag);
  }

  function setCategory(value) {
    category = value;
    chips.forEach(function (chip) {
      chip.setAttribute("aria-pressed", chip.getAttribute("data-cat") === value ? "true" : "false");
    });
    apply();
  }

  chips.forEach(function (chip) {
    chip.addEventListener("click", function () { setCategory(chip.getAttribute("data-cat")); });
  });
  if (search) { search.addEventListener("input", apply); }
  if (detectors) { detectors.addEventListener("change", apply); }
  if (sort) { sort.addEventListener("change", function () { reorder(); apply(); }); }
  if (reset) {
    reset.addEventListener("click", function () {
      if (search) { search.value = ""; }
      if (detectors) { detectors.checked = false; }
      setCategory("");
    });
  }
  document.addEventListener("keydown", function (event) {
    var tag = event.target && event.target.tagName;
    if (event.key === "/" && search && tag !== "INPUT" && tag !== "SELECT" && tag !== "TEXTAREA") {
      event.preventDefault();
      search.focus();
    } else if (event.key === "Escape" && event.target === search) {
      search.value = "";
      apply();
    }
  });

  /* A link to a card that the filters hide (e.g. #u12 after filtering) clears the filters. */
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (target && target.hidden) {
      if (search) { search.value = ""; }
      if (detectors) { detectors.checked = false; }
      setCategory("");
      target.scrollIntoView();
    }
  }
  window.addEventListener("hashchange", reveal);

  /* Browsers restore form state on back/forward: start from what the controls say. */
  if (sort && sort.value !== "score") { reorder(); }
  apply();
})();
