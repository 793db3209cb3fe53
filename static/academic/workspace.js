// The review page of a polish job: progress while it runs, then each part's
// original beside the model's text, every change accepted or rejected on
// its own, and the merged document as it stands.
//
// Model text is only ever put into the page as text (textContent), never as
// HTML. The page polls a small status endpoint once a second; parts are
// fetched as they finish, so a closed tab loses nothing.
(function () {
  "use strict";

  const POLL_MS = 1000;
  const root = document.querySelector("[data-job]");
  if (!root) {
    return;
  }
  const page = JSON.parse(document.getElementById("page-data").textContent);
  const strings = page.strings;
  const chunkList = root.querySelector("[data-chunks]");
  const merged = root.querySelector("[data-merged]");
  const progress = root.querySelector("[data-progress]");
  const progressText = root.querySelector("[data-progress-text]");
  const queuePosition = root.querySelector("[data-queue-position]");
  const cancelForm = root.querySelector("[data-cancel-form]");
  // id -> {status, data (null until fetched), element}
  const chunks = new Map();
  let order = [];

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, (match, key) => String(values[key]));
  }

  function csrfToken() {
    const input = document.querySelector("[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function isFinished(status) {
    return status === "done" || status === "kept";
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) {
      throw new Error(`${url}: ${response.status}`);
    }
    return response.json();
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      throw new Error(`${url}: ${response.status}`);
    }
  }

  async function poll() {
    let status;
    try {
      status = await getJson(page.statusUrl);
    } catch (error) {
      window.setTimeout(poll, POLL_MS);
      return;
    }

    showProgress(status);
    const toFetch = [];
    for (const item of status.chunks) {
      let chunk = chunks.get(item.id);
      if (!chunk) {
        chunk = { status: item.status, data: null, element: null };
        chunks.set(item.id, chunk);
      }
      const newlyFinished = isFinished(item.status) && !isFinished(chunk.status);
      chunk.status = item.status;
      if (!chunk.data || newlyFinished) {
        toFetch.push(item.id);
      }
    }
    order = status.chunks.map((item) => item.id);
    if (toFetch.length) {
      await fetchChunks(toFetch);
    }

    root.dataset.status = status.status;
    showCompile(status.compile);
    const checking = status.compile && ["pending", "running"].includes(status.compile.status);
    if (status.status === "running" || (status.status === "done" && checking)) {
      window.setTimeout(poll, POLL_MS);
    } else if (cancelForm) {
      cancelForm.hidden = true;
    }
  }

  function showCompile(compile) {
    const section = root.querySelector("[data-compile-section]");
    section.hidden = !compile;
    if (!compile) {
      return;
    }
    section.dataset.compileStatus = compile.status;
    section.querySelector("[data-compile-message]").textContent = compile.message;
    const errors = section.querySelector("[data-compile-errors]");
    errors.textContent = compile.errors;
    errors.hidden = !compile.errors;
  }

  function showProgress(status) {
    progress.max = Math.max(1, status.total);
    progress.value = status.finished;
    progressText.textContent = format(strings.progress, status);
    if (status.queuePosition) {
      queuePosition.textContent = format(strings.queuePosition, {
        position: status.queuePosition,
      });
    } else {
      queuePosition.textContent = "";
    }
  }

  async function fetchChunks(ids) {
    const data = await getJson(`${page.chunksUrl}?ids=${ids.join(",")}`);
    for (const item of data.chunks) {
      const chunk = chunks.get(item.id);
      chunk.data = item;
      chunk.status = item.status;
      drawChunk(item.id);
    }
    placeRows();
    drawMerged();
  }

  // A project's parts come file after file, each file under its path.
  function placeRows() {
    chunkList.querySelectorAll("[data-file-heading]").forEach((node) => node.remove());
    let file = null;
    for (const id of order) {
      const chunk = chunks.get(id);
      if (!chunk || !chunk.element) {
        continue;
      }
      if (page.multiFile && chunk.data.file !== file) {
        file = chunk.data.file;
        const heading = element("h3", "file-heading", file);
        heading.dataset.fileHeading = "";
        chunkList.appendChild(heading);
      }
      chunkList.appendChild(chunk.element);
    }
  }

  function drawChunk(id) {
    const chunk = chunks.get(id);
    const data = chunk.data;
    const row = element("div", "chunk");
    row.dataset.chunkId = String(id);
    row.dataset.status = data.status;
    row.append(drawOriginal(data), drawResult(data));
    if (chunk.element) {
      chunk.element.replaceWith(row);
    }
    chunk.element = row;
  }

  function sortedChanges(data) {
    return [...data.changes].sort((a, b) => a.start - b.start);
  }

  function drawOriginal(data) {
    const column = element("div", "chunk-original");
    let position = 0;
    for (const change of sortedChanges(data)) {
      column.append(data.original.slice(position, change.start));
      if (change.end > change.start) {
        column.append(element("span", "changed", data.original.slice(change.start, change.end)));
      }
      position = change.end;
    }
    column.append(data.original.slice(position));
    return column;
  }

  function drawResult(data) {
    const column = element("div", "chunk-result");
    if (data.status === "kept") {
      const note = element("p", "not-changed", format(strings.notChanged, data));
      note.dataset.notChanged = "";
      if (data.detail) {
        note.title = data.detail;
      }
      column.append(note, data.original);
      return column;
    }
    if (data.status !== "done") {
      column.append(element("p", "muted pending", strings.pending));
      return column;
    }

    let position = 0;
    for (const change of sortedChanges(data)) {
      column.append(data.original.slice(position, change.start));
      column.append(drawChange(data, change));
      position = change.end;
    }
    column.append(data.original.slice(position));
    return column;
  }

  function drawChange(data, change) {
    const span = element("span", "change");
    span.dataset.change = String(change.index);
    span.dataset.accepted = String(change.accepted);
    const removed = data.original.slice(change.start, change.end);
    if (removed) {
      span.append(element("del", "", removed));
    }
    if (change.replacement) {
      span.append(element("ins", "", change.replacement));
    }
    const button = element("button", "toggle-change", change.accepted ? "✓" : "✗");
    button.type = "button";
    button.dataset.toggleChange = "";
    button.title = change.accepted ? strings.reject : strings.accept;
    span.append(button);
    return span;
  }

  function mergedChunk(data) {
    let text = "";
    let position = 0;
    for (const change of sortedChanges(data)) {
      text += data.original.slice(position, change.start);
      text += change.accepted ? change.replacement : data.original.slice(change.start, change.end);
      position = change.end;
    }
    return text + data.original.slice(position);
  }

  function drawMerged() {
    const files = new Map();
    for (const id of order) {
      const chunk = chunks.get(id);
      if (chunk && chunk.data) {
        const text = files.get(chunk.data.file) || "";
        files.set(chunk.data.file, text + mergedChunk(chunk.data));
      }
    }
    merged.replaceChildren();
    for (const [file, text] of files) {
      if (page.multiFile) {
        merged.append(element("h3", "file-heading", file));
      }
      merged.append(element("pre", "", text));
    }
  }

  async function toggle(button) {
    const row = button.closest("[data-chunk-id]");
    const id = Number(row.dataset.chunkId);
    const index = Number(button.closest("[data-change]").dataset.change);
    const change = chunks.get(id).data.changes.find((item) => item.index === index);
    const accepted = !change.accepted;
    try {
      await postJson(page.decideUrl, { chunk: id, change: index, accepted: accepted });
    } catch (error) {
      window.alert(strings.saveFailed);
      return;
    }
    change.accepted = accepted;
    drawChunk(id);
    placeRows();
    drawMerged();
  }

  async function decideAll(accepted) {
    try {
      await postJson(page.decideUrl, { all: accepted });
    } catch (error) {
      window.alert(strings.saveFailed);
      return;
    }
    for (const [id, chunk] of chunks) {
      if (chunk.data && chunk.data.status === "done") {
        chunk.data.changes.forEach((change) => {
          change.accepted = accepted;
        });
        drawChunk(id);
      }
    }
    placeRows();
    drawMerged();
  }

  chunkList.addEventListener("click", (event) => {
    const button = event.target.closest("[data-toggle-change]");
    if (button) {
      toggle(button);
    }
  });
  root.querySelector("[data-accept-all]").addEventListener("click", () => decideAll(true));
  root.querySelector("[data-reject-all]").addEventListener("click", () => decideAll(false));
  poll();
})();
