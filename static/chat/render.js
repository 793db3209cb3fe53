/*
 * Typesets math and highlights code in HTML made by chat/rendering.py.
 *
 * Load after static/vendor/katex/katex.min.js and
 * static/vendor/highlight/highlight.min.js (plus languages/latex.min.js).
 * AssistantRender.typeset(root) may be called again and again on the same
 * element while a reply streams in: finished elements are marked and skipped.
 * KaTeX is driven through katex.render, which styles nodes through the DOM
 * rather than style attributes, so a strict Content-Security-Policy holds.
 */
(function () {
  "use strict";

  var DEFAULT_COPY_LABEL = "Copy";
  var COPIED_LABEL = "\u2713";
  var COPIED_FOR_MS = 1500;
  var MAX_EXPAND = 1000;
  var MAX_SIZE_EM = 50;

  var MATH_SELECTOR =
    ".math-inline:not([data-rendered]), .math-display:not([data-rendered])";
  var CODE_SELECTOR = "pre > code:not([data-rendered])";

  function within(root, selector) {
    var found = Array.prototype.slice.call(root.querySelectorAll(selector));
    if (root.matches && root.matches(selector)) {
      found.unshift(root);
    }
    return found;
  }

  function renderMath(element) {
    var tex = element.textContent;
    element.dataset.tex = tex;
    element.dataset.rendered = "true";

    try {
      window.katex.render(tex, element, {
        displayMode: element.classList.contains("math-display"),
        throwOnError: false,
        // \href, \url, \includegraphics and \html* stay inert text: the
        // formula is model output.
        trust: false,
        strict: "ignore",
        output: "htmlAndMathml",
        // Macros that expand into themselves, and sizes that cover the page,
        // end as an error in the formula instead of a frozen or hidden page.
        maxExpand: MAX_EXPAND,
        maxSize: MAX_SIZE_EM,
      });
    } catch (error) {
      // One formula KaTeX cannot handle must not stop the rest: show its TeX.
      element.textContent = tex;
    }
  }

  function copyLabel(root) {
    var labels = root.ownerDocument.documentElement.dataset;
    return labels.copyLabel || DEFAULT_COPY_LABEL;
  }

  function selectText(element) {
    // Without the Clipboard API (an insecure origin), leave the code selected
    // so a keyboard copy picks it up.
    var selection = element.ownerDocument.getSelection();
    var range = element.ownerDocument.createRange();
    range.selectNodeContents(element);
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function showCopied(button, label) {
    button.textContent = COPIED_LABEL;
    window.setTimeout(function () {
      button.textContent = label;
    }, COPIED_FOR_MS);
  }

  function addCopyButton(root, code) {
    var label = copyLabel(root);
    var button = root.ownerDocument.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = label;

    button.addEventListener("click", function () {
      var clipboard = window.navigator.clipboard;
      if (!clipboard) {
        selectText(code);
        return;
      }
      clipboard.writeText(code.textContent).then(
        function () {
          showCopied(button, label);
        },
        function () {
          selectText(code);
        }
      );
    });

    code.parentNode.appendChild(button);
  }

  function highlightCode(root, code) {
    code.dataset.rendered = "true";

    if (window.hljs) {
      window.hljs.highlightElement(code);
    }

    addCopyButton(root, code);
  }

  function typeset(root) {
    if (!root) {
      return;
    }

    if (window.katex) {
      within(root, MATH_SELECTOR).forEach(renderMath);
    }

    within(root, CODE_SELECTOR).forEach(function (code) {
      highlightCode(root, code);
    });
  }

  window.AssistantRender = { typeset: typeset };
})();
