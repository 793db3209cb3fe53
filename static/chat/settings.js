/*
 * The conversation's settings panel: instructions, temperature, output
 * limit, thinking, and presets.
 *
 * The forms work without this script; here they are sent in the background
 * and the server's answer (already in the reader's language) shows in the
 * panel, so the conversation stays where it is. The panel follows the model
 * chosen in the composer: the thinking switch shows only for a model that
 * can switch, and the output limit says the model's cap.
 */
(function () {
  "use strict";

  var pageData = JSON.parse(document.getElementById("page-data").textContent);
  var panel = document.querySelector("[data-settings-panel]");
  if (!panel) return;

  var els = {
    model: document.querySelector("[data-model-select]"),
    applyForm: panel.querySelector("[data-preset-apply]"),
    choice: panel.querySelector("[data-preset-choice]"),
    form: panel.querySelector("[data-settings-form]"),
    prompt: panel.querySelector("[data-settings-prompt]"),
    temperature: panel.querySelector("[data-settings-temperature]"),
    limit: panel.querySelector("[data-settings-limit]"),
    limitHelp: panel.querySelector("[data-settings-limit-help]"),
    thinkingField: panel.querySelector("[data-settings-thinking-field]"),
    thinking: panel.querySelector("[data-settings-thinking]"),
    status: panel.querySelector("[data-settings-status]"),
    newName: panel.querySelector("[data-preset-new-name]"),
    newChatPreset: document.querySelector("[data-new-chat-preset]")
  };

  function t(key, params) {
    var text = pageData.strings[key] || key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("%(" + name + ")s").join(String(params[name]));
    });
    return text;
  }

  function showStatus(text, ok) {
    els.status.textContent = text;
    els.status.classList.toggle("is-error", !ok);
  }

  /* The fields a model allows: its output cap, and the switch if it has one. */
  function followModel() {
    var info = els.model && pageData.modelSettings[els.model.value];
    els.thinkingField.hidden = !(info && info.canSwitchThinking);
    if (info) {
      els.limit.max = String(info.outputCap);
      els.limitHelp.textContent = t("settings.outputCap", { cap: info.outputCap });
    }
  }

  function fill(values) {
    els.prompt.value = values.prompt || "";
    els.temperature.value = values.temperature === null || values.temperature === undefined
      ? "" : String(values.temperature);
    els.limit.value = values.max_output_tokens ? String(values.max_output_tokens) : "";
    els.thinking.checked = values.thinking !== false;
  }

  function post(url, body) {
    return window.fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRFToken": pageData.csrfToken }
    }).then(function (response) {
      return response.json();
    });
  }

  function addPresetOption(preset) {
    [els.choice, els.newChatPreset].forEach(function (select) {
      if (!select) return;
      var option = document.createElement("option");
      option.value = preset.ref;
      option.textContent = preset.name;
      select.append(option);
    });
    pageData.presets.push(preset);
  }

  els.form.addEventListener("submit", function (event) {
    event.preventDefault();
    var submitter = event.submitter;
    var url = (submitter && submitter.getAttribute("formaction")) || els.form.getAttribute("action");
    post(url, new FormData(els.form)).then(function (answer) {
      showStatus(answer.message, answer.ok);
      if (!answer.ok) return;
      if (answer.preset) {
        addPresetOption(answer.preset);
        els.newName.value = "";
      }
      if (answer.settings) fill(answer.settings);
    }).catch(function () {
      showStatus(panel.dataset.errorText, false);
    });
  });

  els.applyForm.addEventListener("submit", function (event) {
    event.preventDefault();
    post(els.applyForm.getAttribute("action"), new FormData(els.applyForm)).then(function (answer) {
      showStatus(answer.message, answer.ok);
      if (answer.ok && answer.settings) fill(answer.settings);
    }).catch(function () {
      showStatus(panel.dataset.errorText, false);
    });
  });

  // A new chat started from a preset: the server copied it; show its values.
  document.addEventListener("chat:conversation-started", function (event) {
    var ref = event.detail.preset;
    var preset = pageData.presets.filter(function (p) { return p.ref === ref; })[0];
    if (preset) fill(preset);
  });

  if (els.model) els.model.addEventListener("change", followModel);
  followModel();
}());
