// The workspace's form: the thinking switch follows the model chosen, as in
// chat's settings, and shows only for a model that can switch. Without this
// script the switch always shows; the others think regardless.
(function () {
  "use strict";

  const form = document.querySelector("[data-polish-form]");
  const data = document.getElementById("thinking-models");
  if (!form || !data) {
    return;
  }
  const canSwitch = new Set(JSON.parse(data.textContent));
  const model = form.querySelector("[name=model]");
  const field = form.querySelector("[data-thinking-field]");

  function followModel() {
    field.hidden = !canSwitch.has(model.value);
  }

  model.addEventListener("change", followModel);
  followModel();
})();
