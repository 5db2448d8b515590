// Small helpers the console uses without inline handlers (the CSP allows no inline script).
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-grant-all]");
  if (!button) return;
  var form = button.closest("form");
  form.querySelectorAll(".perm-grid input[type=checkbox]").forEach(function (box) { box.checked = true; });
});
