/* A shared conversation: typeset the server-rendered answers' math and code. */
(function () {
  "use strict";

  document.querySelectorAll("[data-shared-answer]").forEach(function (answer) {
    if (window.AssistantRender) window.AssistantRender.typeset(answer);
  });
}());
