// The paper page: while the paper is read, show "Reading part 3 of 12"
// from the status URL every second, and reload once it has ended, so the
// summary (rendered and sanitised on the server) appears.
(function () {
  "use strict";

  var dataNode = document.getElementById("page-data");
  if (!dataNode) {
    return;
  }
  var pageData = JSON.parse(dataNode.textContent);
  if (!pageData.running) {
    return;
  }
  var progressText = document.querySelector("[data-progress-text]");

  function poll() {
    fetch(pageData.statusUrl, { credentials: "same-origin" })
      .then(function (response) {
        return response.json();
      })
      .then(function (state) {
        if (progressText) {
          progressText.textContent = state.text;
        }
        if (state.running) {
          window.setTimeout(poll, 1000);
        } else {
          window.location.reload();
        }
      })
      .catch(function () {
        window.setTimeout(poll, 3000);
      });
  }

  poll();
})();
