/*
 * The image converter: paste, drop or pick a picture, watch it convert,
 * check the preview beside the original, copy the source.
 *
 * An image is sent as soon as it arrives, with the options chosen at that
 * moment; the conversion runs in a worker, so the page polls its JSON until
 * it ends. Model output is untrusted: formulas are typeset by KaTeX from the
 * source (text, never HTML), and tables arrive as HTML the server built and
 * sanitised, which alone goes to innerHTML.
 */
(function () {
  "use strict";

  var POLL_MS = 700;
  var COPIED_FOR_MS = 1500;

  var pageData = JSON.parse(document.getElementById("page-data").textContent);
  var strings = pageData.strings;

  var els = {
    form: document.querySelector("[data-convert-form]"),
    dropzone: document.querySelector("[data-dropzone]"),
    fileInput: document.querySelector("[data-file-input]"),
    wrapperField: document.querySelector("[data-wrapper-field]"),
    again: document.querySelector("[data-convert-again]"),
    noModel: document.querySelector("[data-no-model]"),
    status: document.querySelector("[data-status]"),
    error: document.querySelector("[data-error]"),
    result: document.querySelector("[data-result]"),
    original: document.querySelector("[data-original]"),
    preview: document.querySelector("[data-preview]"),
    renderError: document.querySelector("[data-render-error]"),
    adjustments: document.querySelector("[data-adjustments]"),
    answeredBy: document.querySelector("[data-answered-by]"),
    lowConfidence: document.querySelector("[data-low-confidence]"),
    source: document.querySelector("[data-source]"),
    copy: document.querySelector("[data-copy]"),
    copyMathml: document.querySelector("[data-copy-mathml]"),
    sendToChat: document.querySelector("[data-send-to-chat]"),
    sendToPolish: document.querySelector("[data-send-to-polish]"),
    history: document.querySelector("[data-history]"),
    historyEmpty: document.querySelector("[data-history-empty]")
  };

  var state = {
    shown: null,
    mathml: "",
    pollTimer: null
  };

  function t(key, params) {
    var text = strings[key] || key;
    Object.keys(params || {}).forEach(function (name) {
      text = text.split("%(" + name + ")s").join(String(params[name]));
    });
    return text;
  }

  function checkedValue(name) {
    var input = els.form.querySelector("input[name=" + name + "]:checked");
    return input ? input.value : "";
  }

  function csrfToken() {
    return els.form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = !message;
  }

  // Options --------------------------------------------------------------

  function syncOptions() {
    var isFormula = checkedValue("kind") === "formula";
    var htmlTarget = els.form.querySelector("input[name=target][value=html]");
    htmlTarget.disabled = isFormula;
    if (isFormula && htmlTarget.checked) {
      els.form.querySelector("input[name=target][value=latex]").checked = true;
    }
    els.wrapperField.hidden = !isFormula;
  }

  // Sending an image -----------------------------------------------------

  function send(blob) {
    if (!blob) return;
    var body = new FormData(els.form);
    body.append("image", blob, blob.name || "pasted.png");
    start(pageData.createUrl, body);
  }

  function convertAgain() {
    // The server kept the picture: only the options travel.
    if (state.shown) start(state.shown.againUrl, new FormData(els.form));
  }

  function start(url, body) {
    showError("");
    els.status.textContent = t("uploading");
    fetch(url, {
      method: "POST",
      body: body,
      headers: { "X-CSRFToken": csrfToken() },
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.error || response.statusText);
        return data;
      });
    }).then(function (conversion) {
      addToHistory(conversion);
      follow(conversion);
    }).catch(function (error) {
      els.status.textContent = "";
      showError(error instanceof TypeError ? t("networkError") : error.message);
    });
  }

  function follow(conversion) {
    window.clearTimeout(state.pollTimer);
    show(conversion);
    if (!conversion.isOpen) return;

    state.pollTimer = window.setTimeout(function () {
      fetch(conversion.statusUrl, { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (fresh) {
          updateHistory(fresh);
          follow(fresh);
        })
        .catch(function () {
          follow(conversion);
        });
    }, POLL_MS);
  }

  function imageFrom(items) {
    for (var i = 0; i < items.length; i += 1) {
      var item = items[i];
      if (item.kind === "file" && item.type.indexOf("image/") === 0) {
        return item.getAsFile();
      }
    }
    return null;
  }

  // Showing a conversion -------------------------------------------------

  function show(conversion) {
    state.shown = conversion;
    els.result.hidden = false;
    els.again.hidden = false;
    els.original.src = conversion.imageUrl;
    markCurrent(conversion.id);

    if (conversion.isOpen) {
      els.status.textContent = conversion.queuePosition
        ? t("queuePosition", { position: conversion.queuePosition })
        : t(conversion.status === "queued" ? "queued" : "running");
    } else {
      els.status.textContent = "";
    }
    showError(conversion.error);
    els.adjustments.hidden = !conversion.adjustments.length;
    els.adjustments.textContent = t("adjusted", {
      steps: conversion.adjustments.join(", ")
    });

    // Both texts come translated from the server (convert_views.py).
    els.answeredBy.hidden = !conversion.answeredBy;
    els.answeredBy.textContent = conversion.answeredBy;
    els.lowConfidence.hidden = !conversion.lowConfidence;
    els.lowConfidence.textContent = conversion.lowConfidence;

    els.source.value = conversion.text;
    els.result.dataset.status = conversion.status;
    els.result.dataset.engine = conversion.engine;
    renderPreview(conversion);
  }

  function renderPreview(conversion) {
    els.preview.textContent = "";
    els.renderError.hidden = true;
    els.copyMathml.hidden = true;
    state.mathml = "";
    if (!conversion.source) return;

    if (conversion.kind === "formula") {
      renderFormula(conversion.source);
    } else {
      // Built and sanitised on the server (academic/table_preview.py).
      els.preview.innerHTML = conversion.previewHtml;
      window.AssistantRender.typeset(els.preview);
    }
  }

  function renderFormula(tex) {
    try {
      window.katex.render(tex, els.preview, {
        displayMode: true, throwOnError: true, trust: false, strict: "ignore",
        maxExpand: 1000, maxSize: 50
      });
      // Word pastes a bare <math> element; KaTeX wraps it in a span.
      var holder = document.createElement("div");
      window.katex.render(tex, holder, {
        displayMode: true, output: "mathml", throwOnError: true, trust: false,
        strict: "ignore", maxExpand: 1000, maxSize: 50
      });
      state.mathml = holder.querySelector("math").outerHTML;
      els.copyMathml.hidden = false;
    } catch (error) {
      // Flagged, not hidden: the source stays in the box for the user to fix.
      els.preview.textContent = tex;
      els.renderError.textContent = t("katexFailed", { error: error.message });
      els.renderError.hidden = false;
    }
  }

  // History --------------------------------------------------------------

  function historyButton(conversion) {
    var button = document.createElement("button");
    button.type = "button";
    button.dataset.conversionId = conversion.id;
    fillHistoryButton(button, conversion);
    button.addEventListener("click", function () {
      fetch(conversion.statusUrl, { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(follow);
    });
    return button;
  }

  function fillHistoryButton(button, conversion) {
    button.textContent = conversion.label;
    var detail = document.createElement("small");
    detail.textContent = new Date(conversion.created).toLocaleString() +
      (conversion.error ? " · ✗" : "");
    button.appendChild(detail);
    button.dataset.status = conversion.status;
  }

  function addToHistory(conversion) {
    els.historyEmpty.hidden = true;
    els.history.insertBefore(historyButton(conversion), els.history.firstChild);
  }

  function updateHistory(conversion) {
    var button = els.history.querySelector(
      "[data-conversion-id='" + conversion.id + "']");
    if (button) fillHistoryButton(button, conversion);
  }

  function markCurrent(id) {
    els.history.querySelectorAll("[data-conversion-id]").forEach(function (button) {
      if (Number(button.dataset.conversionId) === id) {
        button.setAttribute("aria-current", "true");
      } else {
        button.removeAttribute("aria-current");
      }
    });
  }

  // Copy and send --------------------------------------------------------

  function copy(button, text) {
    var label = button.textContent;
    var done = function () {
      button.textContent = t("copied");
      window.setTimeout(function () { button.textContent = label; }, COPIED_FOR_MS);
    };
    if (window.navigator.clipboard) {
      window.navigator.clipboard.writeText(text).then(done, function () {
        els.source.select();
      });
    } else {
      // Without the Clipboard API (an insecure origin) leave it selected.
      els.source.select();
    }
  }

  // Wiring ---------------------------------------------------------------

  document.addEventListener("paste", function (event) {
    var image = imageFrom(event.clipboardData ? event.clipboardData.items : []);
    if (image) {
      event.preventDefault();
      send(image);
    } else if (event.target !== els.source) {
      showError(t("noImage"));
    }
  });
  els.dropzone.addEventListener("dragover", function (event) {
    event.preventDefault();
    els.dropzone.classList.add("is-over");
  });
  els.dropzone.addEventListener("dragleave", function () {
    els.dropzone.classList.remove("is-over");
  });
  els.dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    els.dropzone.classList.remove("is-over");
    var files = event.dataTransfer ? event.dataTransfer.files : [];
    send(files.length ? files[0] : null);
  });
  els.fileInput.addEventListener("change", function () {
    send(els.fileInput.files[0]);
    els.fileInput.value = "";
  });
  els.again.addEventListener("click", convertAgain);
  els.form.addEventListener("change", syncOptions);
  els.form.addEventListener("submit", function (event) { event.preventDefault(); });

  els.copy.addEventListener("click", function () { copy(els.copy, els.source.value); });
  els.copyMathml.addEventListener("click", function () {
    copy(els.copyMathml, state.mathml);
  });
  els.sendToChat.addEventListener("click", function () {
    window.location.href = pageData.chatUrl + "?prefill=" +
      encodeURIComponent(els.source.value);
  });
  els.sendToPolish.addEventListener("click", function () {
    window.location.href = pageData.polishUrl + "?text=" +
      encodeURIComponent(els.source.value);
  });

  if (pageData.noVisionModel) {
    els.noModel.textContent = pageData.noVisionModel;
    els.noModel.hidden = false;
  }
  pageData.history.slice().reverse().forEach(addToHistory);
  syncOptions();
}());
