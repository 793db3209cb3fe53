// The code analysis page: shows the progress while the parts and the
// overview are written, and reloads once when a part or the overview has
// finished since the page was drawn, so that everything shown is rendered
// (and sanitised) by the server. A closed tab loses nothing.
(function () {
  "use strict";

  const POLL_MS = 1000;
  const root = document.querySelector("[data-code-analysis]");
  if (!root) {
    return;
  }
  const page = JSON.parse(document.getElementById("page-data").textContent);
  const progress = root.querySelector("[data-progress]");
  const progressText = root.querySelector("[data-progress-text]");
  const queuePosition = root.querySelector("[data-queue-position]");
  // The parts finished when the server drew the page.
  const shownFinished = page.finished;

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (_match, name) => String(values[name]));
  }

  function show(state) {
    progress.max = Math.max(1, state.total);
    progress.value = state.finished;
    progressText.textContent = format(page.strings.progress, state);
    queuePosition.textContent =
      state.queuePosition != null
        ? format(page.strings.queuePosition, { position: state.queuePosition })
        : "";
  }

  async function poll() {
    let state;
    try {
      const response = await fetch(page.statusUrl, {
        headers: { Accept: "application/json" },
      });
      state = await response.json();
    } catch (error) {
      window.setTimeout(poll, POLL_MS);
      return;
    }
    show(state);
    const ended = state.status !== "running" && state.overview !== "running" &&
      state.overview !== "pending";
    if (state.finished !== shownFinished || (ended && root.dataset.status === "running")) {
      window.location.reload();
      return;
    }
    if (!ended) {
      window.setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
