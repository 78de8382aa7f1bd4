// Marks every table (and figure) that is wider than its box, so CSS can show "scroll
// sideways" above it.
(function () {
  function mark() {
    var boxes = Array.from(document.querySelectorAll(".table-wrapper"));
    document.querySelectorAll("img.and-figure, img.and-figure-wide").forEach(function (image) {
      boxes.push(image.parentElement);
    });
    boxes.forEach(function (box) {
      box.classList.toggle("and-scrolls", box.scrollWidth > box.clientWidth + 1);
    });
  }
  window.addEventListener("load", mark);
  window.addEventListener("resize", mark);
})();
