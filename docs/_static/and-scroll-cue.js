// Marks every table that is wider than its box, so CSS can show "scroll sideways" above it.
(function () {
  function mark() {
    document.querySelectorAll(".table-wrapper").forEach(function (box) {
      box.classList.toggle("and-scrolls", box.scrollWidth > box.clientWidth + 1);
    });
  }
  window.addEventListener("load", mark);
  window.addEventListener("resize", mark);
})();
