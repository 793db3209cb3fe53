/*
 * The chat page: one websocket, the conversation's messages, the composer.
 *
 * Every message is drawn by this script, from the page's JSON on load and
 * from the worker's events afterwards, so a reply looks the same while it
 * streams and after a reload. Answers arrive as raw text deltas plus, a few
 * times a second, HTML rendered and sanitised on the server; between two
 * renders the newest text shows as plain text after the rendered part.
 * Events carry sequence numbers per reply; anything at or below the number
 * a reply already has is a repeat (snapshot and live overlap) and is dropped.
 *
 * A conversation is a tree of versions (regenerated answers, edited
 * questions); the page shows one path of it. A switch, an edit or a
 * regenerate is asked of the server, which answers every page on the
 * conversation with the new path, and each page draws it afresh.
 */
(function () {
  "use strict";

  var pageData = JSON.parse(document.getElementById("page-data").textContent);
  var strings = pageData.strings;
  var OPEN_STATUSES = ["queued", "streaming"];
  // How long a sent question may wait for the server's "posted" before the
  // composer sends again.
  var PENDING_SEND_MS = 10000;
  var QUIET_REPLY_MS = 15000;
  var TOO_LONG_CODES = ["context_overflow", "input_too_long"];
  var RETRYABLE = ["error", "stopped", "incomplete", "no_answer", "length_in_reasoning",
    "length_in_answer", "reason_unknown"];

  var els = {
    messages: document.querySelector("[data-messages]"),
    welcome: document.querySelector("[data-welcome]"),
    composer: document.querySelector("[data-composer]"),
    text: document.querySelector("[data-composer-text]"),
    error: document.querySelector("[data-composer-error]"),
    model: document.querySelector("[data-model-select]"),
    send: document.querySelector("[data-send]"),
    stop: document.querySelector("[data-stop]"),
    banner: document.querySelector("[data-connection-banner]"),
    list: document.querySelector("[data-conversation-list]"),
    attachInput: document.querySelector("[data-attach-input]"),
    chips: document.querySelector("[data-attachment-chips]"),
    pane: document.querySelector("[data-chat-pane]"),
    dropTarget: document.querySelector("[data-drop-target]"),
    newChatPreset: document.querySelector("[data-new-chat-preset]")
  };

  var state = {
    conversationId: pageData.conversationId,
    replies: new Map(),
    socket: null,
    reconnectDelay: 500,
    // Actions taken while the socket is (re)connecting, sent once it opens.
    outbox: [],
    pendingToken: null,
    pendingSince: 0,
    // Files uploaded for the next question: {id, name, chars}.
    attachments: [],
    uploading: 0,
    everConnected: false
  };

  function t(key, params) {
    var text = strings[key] || key;
    if (params) {
      Object.keys(params).forEach(function (name) {
        text = text.split("%(" + name + ")s").join(String(params[name]));
      });
    }
    return text;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* ---------------------------------------------------------------- replies */

  function ReplyView(message) {
    this.id = message.id;
    this.message = message;
    this.thinkingSince = null;
    this.userToggledPanel = false;
    this.lastEventAt = Date.now();
    this.build();
    this.load(message);
  }

  /* Take the state of a stored reply: on page load and from a snapshot. */
  ReplyView.prototype.load = function (message) {
    this.seq = message.seq || 0;
    this.status = message.status;
    this.reasoning = message.reasoning || "";
    this.answer = message.content || "";
    this.reasoningMs = message.reasoning_ms;
    if (typeof message.thinking_ms === "number") {
      // The server says how long the model has thought, so a reload or a
      // reconnect goes on counting instead of starting again from zero.
      this.thinkingSince = Date.now() - message.thinking_ms;
    }
    this.errorCode = message.error_code || "";
    this.errorDetail = message.error_detail || "";
    this.errorParams = message.error_params || {};
    this.warningCode = message.warning_code || "";
    this.canExtend = Boolean(message.can_extend);
    this.reasoningText.textContent = this.reasoning;
    this.setRendered(message.html || "", this.answer.length);
    this.update();
  };

  ReplyView.prototype.build = function () {
    var self = this;
    this.node = el("article", "message assistant");
    this.node.dataset.messageId = this.id;
    this.node.id = "message-" + this.id;

    this.panel = el("details", "reasoning");
    this.panelLabel = el("summary", "reasoning-label");
    this.reasoningText = el("div", "reasoning-text");
    this.panel.append(this.panelLabel, this.reasoningText);
    // "toggle" also fires, later, for changes made by this script; only a
    // state other than the one the script chose is the reader's doing.
    this.panelWanted = false;
    this.panel.addEventListener("toggle", function () {
      if (self.panel.open !== self.panelWanted) self.userToggledPanel = true;
    });

    this.answerNode = el("div", "answer markdown");
    this.rendered = el("div", "answer-rendered");
    this.tail = el("span", "answer-tail");
    this.answerNode.append(this.rendered, this.tail);

    this.waiting = el("div", "waiting", t("queued"));
    this.note = el("div", "status-note");
    this.actions = el("div", "message-actions");
    this.retryButton = this.actionButton("retry", "same");
    this.largerButton = this.actionButton("retry.larger_limit", "larger_limit");
    this.trimButton = this.actionButton("retry.trim_history", "trim_history");
    this.warning = el("div", "warning-note");
    this.copyButton = el("button", "copy-answer", t("copyMarkdown"));
    this.copyButton.type = "button";
    this.copyButton.addEventListener("click", function () { self.copyAnswer(); });
    this.tools = el("div", "message-tools");
    this.tools.append(this.copyButton);
    if (this.message.parent_id) {
      this.regenerateButton = el("button", "regenerate", t("regenerate"));
      this.regenerateButton.type = "button";
      this.regenerateButton.addEventListener("click", function () { self.regenerate(); });
      this.tools.append(this.regenerateButton);
    }
    var nav = branchNav(this.message);
    if (nav) this.tools.append(nav);

    this.node.append(
      this.panel, this.waiting, this.answerNode, this.note, this.warning, this.actions,
      this.tools
    );
  };

  /* A new answer to the same question; this one stays, as the other branch. */
  ReplyView.prototype.regenerate = function () {
    hideComposerError();
    if (openReplies().length > 0) {
      showComposerError(t("refused.busy"));
      return;
    }
    sendAction({ action: "regenerate", message_id: this.id, model: els.model.value });
  };

  /* The answer as the model wrote it: Markdown, with math and code as source. */
  ReplyView.prototype.copyAnswer = function () {
    var button = this.copyButton;
    var clipboard = window.navigator.clipboard;
    if (!clipboard) return;
    clipboard.writeText(this.answer).then(function () {
      button.textContent = t("copied");
      window.setTimeout(function () { button.textContent = t("copyMarkdown"); }, 1500);
    });
  };

  ReplyView.prototype.actionButton = function (label, mode) {
    var self = this;
    var button = el("button", "retry retry-" + mode, t(label));
    button.type = "button";
    button.addEventListener("click", function () {
      sendAction({ action: "retry", message_id: self.id, mode: mode });
    });
    this.actions.append(button);
    return button;
  };

  ReplyView.prototype.isOpen = function () {
    return OPEN_STATUSES.indexOf(this.status) !== -1;
  };

  ReplyView.prototype.setRendered = function (html, chars) {
    this.rendered.innerHTML = html;
    this.renderedChars = chars;
    if (window.AssistantRender) window.AssistantRender.typeset(this.rendered);
    this.tail.textContent = this.answer.slice(this.renderedChars);
  };

  ReplyView.prototype.apply = function (event) {
    this.lastEventAt = Date.now();
    if (event.kind === "queue") {
      // Live only: where the reply stands in the app's queue for the model.
      // The estimate made at posting (from the "posted" message) may come
      // after the worker's own report of its ticket's place, in another
      // tab, or after the reply began: it is then out of date.
      if (event.expected && (this.heardFromQueue || this.status !== "queued")) return;
      if (!event.expected) this.heardFromQueue = true;
      this.queuePosition = event.position;
      this.queueEta = event.eta;
      this.update();
      return;
    }
    if (event.kind === "busy") {
      // Live only: the server answered 429 or 503 and the reply will ask again.
      this.busy = event;
      this.update();
      return;
    }
    if (event.kind === "render") {
      // Live only, numbered like the last text it includes.
      if (event.seq === this.seq && event.chars <= this.answer.length) {
        this.setRendered(event.html, event.chars);
      }
      return;
    }
    if (event.seq <= this.seq) return;
    this.seq = event.seq;
    this.busy = null;

    switch (event.kind) {
      case "status":
        this.status = event.status;
        this.queuePosition = null;
        this.warningCode = event.warning_code || "";
        break;
      case "reasoning":
        this.status = "streaming";
        if (this.thinkingSince === null) this.thinkingSince = Date.now();
        this.reasoning += event.text;
        this.reasoningText.textContent = this.reasoning;
        break;
      case "answer":
        this.status = "streaming";
        if (!this.answer && this.thinkingSince !== null) {
          this.reasoningMs = Date.now() - this.thinkingSince;
        }
        this.answer += event.text;
        this.tail.textContent = this.answer.slice(this.renderedChars);
        break;
      case "reclassify":
        // The text shown as answer was reasoning all along (a bare </think>).
        this.reasoning += this.answer;
        this.reasoningText.textContent = this.reasoning;
        this.answer = "";
        this.setRendered("", 0);
        if (this.thinkingSince === null) this.thinkingSince = Date.now();
        break;
      case "reset":
        this.status = "queued";
        // A new attempt waits anew: estimates count again until its worker
        // reports.
        this.heardFromQueue = false;
        this.queuePosition = null;
        this.reasoning = this.answer = "";
        this.reasoningText.textContent = "";
        this.errorCode = this.errorDetail = this.warningCode = "";
        this.errorParams = {};
        this.canExtend = false;
        this.reasoningMs = null;
        this.thinkingSince = null;
        this.userToggledPanel = false;
        this.setRendered("", 0);
        break;
      case "end":
        this.status = event.status;
        this.errorCode = event.error_code || "";
        this.errorDetail = event.error_detail || "";
        this.errorParams = event.error_params || {};
        this.warningCode = event.warning_code || "";
        this.canExtend = Boolean(event.can_extend);
        if (event.reasoning_ms !== null && event.reasoning_ms !== undefined) {
          this.reasoningMs = event.reasoning_ms;
        }
        this.setRendered(event.html || "", this.answer.length);
        break;
    }
    this.update();
  };

  ReplyView.prototype.update = function () {
    var open = this.isOpen();
    var hasReasoning = this.reasoning.trim().length > 0;
    var hasAnswer = this.answer.trim().length > 0;
    var thinking = open && hasReasoning && !hasAnswer;

    this.node.classList.toggle("is-open", open);
    this.node.dataset.status = this.status;
    this.waiting.hidden = !(open && !hasReasoning && !hasAnswer);
    this.waiting.textContent = this.waitingText();

    this.panel.hidden = !hasReasoning;
    this.panel.classList.toggle("is-thinking", thinking);
    this.panelLabel.textContent = this.panelText(thinking);
    if (!this.userToggledPanel) {
      // Open while it thinks, folded once the answer starts or the reply ends.
      this.panelWanted = thinking;
      this.panel.open = thinking;
    }

    this.answerNode.hidden = !hasAnswer;
    this.note.textContent = this.noteText();
    this.note.hidden = !this.note.textContent;
    this.node.classList.toggle("has-error", this.status === "error");
    this.warning.textContent = this.warningCode ? t("warning." + this.warningCode) : "";
    this.warning.hidden = !this.warningCode;
    this.actions.hidden = open || RETRYABLE.indexOf(this.status) === -1;
    this.largerButton.hidden = !this.canExtend;
    // Leaving out older turns helps only when there are some.
    this.trimButton.hidden = TOO_LONG_CODES.indexOf(this.errorCode) === -1 ||
      !hasEarlierExchange(this.node);
    this.copyButton.hidden = open || !hasAnswer;
    if (this.regenerateButton) this.regenerateButton.hidden = open;
    refreshStopButton();
  };

  /* Whether a message comes before the question this reply answers. */
  function hasEarlierExchange(replyNode) {
    var question = replyNode.previousElementSibling;
    var before = question && question.previousElementSibling;
    return Boolean(before && before.classList.contains("message"));
  }

  ReplyView.prototype.waitingText = function () {
    if (this.busy && this.status === "streaming") {
      return t("busy.retry", {
        status: this.busy.status_code,
        seconds: Math.max(1, Math.ceil(this.busy.seconds)),
        attempt: this.busy.attempt,
        attempts: this.busy.attempts,
      });
    }
    if (this.status !== "queued" || !this.queuePosition) return t("queued");
    var text = t("queue.position", { position: this.queuePosition });
    if (this.queueEta !== null && this.queueEta !== undefined) {
      text += t("queue.eta", { seconds: Math.max(1, Math.round(this.queueEta)) });
    }
    return text;
  };

  ReplyView.prototype.panelText = function (thinking) {
    if (thinking) {
      var seconds = this.thinkingSince ? Math.round((Date.now() - this.thinkingSince) / 1000) : 0;
      return t("thinking") + (seconds ? " " + seconds + " s" : "");
    }
    if (this.status === "length_in_reasoning") return t("thoughtCut");
    if (!this.answer.trim() && this.status !== "stop" && this.status !== "no_answer") {
      // Stopped, failed or cut before the answer: it never finished thinking.
      return t("thinkingInterrupted");
    }
    if (this.reasoningMs !== null && this.reasoningMs !== undefined) {
      return t("thoughtFor", { seconds: (this.reasoningMs / 1000).toFixed(1) });
    }
    return t("reasoning");
  };

  ReplyView.prototype.noteText = function () {
    if (this.status === "error") {
      var text = t("error." + (this.errorCode || "internal"), this.errorParams);
      if (this.errorDetail) {
        var fromServer = pageData.serverDetailCodes.indexOf(this.errorCode) !== -1;
        text += " " + t(fromServer ? "serverSaid" : "details") + " " + this.errorDetail;
      }
      return text;
    }
    var key = "status." + this.status;
    if (this.status === "stopped" && !this.answer && !this.reasoning) {
      // Stopped while it waited in the queue: there is no text to keep.
      key = "status.stopped_unstarted";
    }
    return strings[key] ? strings[key] : "";
  };

  /* --------------------------------------------------------------- messages */

  function addQuestion(message) {
    var node = el("article", "message user");
    node.dataset.messageId = message.id;
    node.id = "message-" + message.id;
    var bubble = el("div", "question-text", message.content);
    (message.attachments || []).forEach(function (attachment) {
      bubble.append(el("span", "attachment-chip", "📎 " + attachment.name));
    });
    node.append(bubble);

    var tools = el("div", "message-tools");
    var edit = el("button", "edit-question", t("edit"));
    edit.type = "button";
    edit.addEventListener("click", function () { startEdit(node, bubble, message); });
    tools.append(edit);
    var nav = branchNav(message);
    if (nav) tools.append(nav);
    node.append(tools);
    els.messages.append(node);
  }

  /* -------------------------------------------------------------- branches */

  /* "‹ 1/2 ›" under a message that has other versions; null if it has none. */
  function branchNav(message) {
    var branch = message.branch;
    if (!branch || branch.count < 2) return null;
    var nav = el("span", "branch-nav");
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", t("branch.label"));
    var position = el("span", "branch-position", branch.index + "/" + branch.count);
    position.setAttribute("aria-label", t("branch.position", branch));
    nav.append(
      branchButton("‹", "branch.previous", branch.previous),
      position,
      branchButton("›", "branch.next", branch.next)
    );
    return nav;
  }

  function branchButton(symbol, label, targetId) {
    var button = el("button", "branch-switch", symbol);
    button.type = "button";
    button.setAttribute("aria-label", t(label));
    button.dataset.branch = label.split(".")[1];
    button.disabled = targetId === null;
    button.addEventListener("click", function () {
      hideComposerError();
      if (openReplies().length > 0) {
        showComposerError(t("refused.busy"));
        return;
      }
      sendAction({ action: "switch", message_id: targetId });
    });
    return button;
  }

  /* Turn a question into a box to edit it in; sent, it starts a new branch. */
  function startEdit(node, bubble, message) {
    if (node.querySelector(".edit-form")) return;
    var form = el("form", "edit-form");
    var text = el("textarea", "edit-text");
    text.value = message.content;
    text.rows = 3;
    text.setAttribute("aria-label", t("edit.label"));
    var bar = el("div", "edit-bar");
    var cancel = el("button", "edit-cancel", t("edit.cancel"));
    cancel.type = "button";
    var send = el("button", "primary edit-send", t("edit.send"));
    send.type = "submit";
    bar.append(cancel, send);
    form.append(text, bar);
    bubble.hidden = true;
    node.classList.add("is-editing");
    node.insertBefore(form, bubble.nextSibling);

    cancel.addEventListener("click", function () {
      form.remove();
      bubble.hidden = false;
      node.classList.remove("is-editing");
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      // The box stays, with its text, until the server draws the new branch.
      if (!questionFits(text.value)) return;
      sendAction({
        action: "edit", message_id: message.id, text: text.value, model: els.model.value
      });
    });
    text.focus();
  }

  /* Draw the path the server says is on show, in place of the one shown. */
  function drawPath(messages) {
    // An edit being typed survives a redraw that another page caused, as
    // long as its question is still shown.
    var editing = {};
    els.messages.querySelectorAll("article.message.is-editing").forEach(function (node) {
      editing[node.dataset.messageId] = node.querySelector(".edit-text").value;
    });
    els.messages.querySelectorAll("article.message").forEach(function (node) {
      node.remove();
    });
    state.replies = new Map();
    messages.forEach(addMessage);
    Object.keys(editing).forEach(function (id) {
      var node = document.getElementById("message-" + id);
      if (!node) return;
      node.querySelector(".edit-question").click();
      node.querySelector(".edit-text").value = editing[id];
    });
    refreshStopButton();
    // Events of a new reply may have come before this path did; the
    // snapshot brings the reply up to date.
    watch();
  }

  /* The id of the last message shown: a new question follows it. */
  function lastShownId() {
    var nodes = els.messages.querySelectorAll("article.message");
    var last = nodes[nodes.length - 1];
    return last ? Number(last.dataset.messageId) : null;
  }

  function addReply(message) {
    var view = new ReplyView(message);
    state.replies.set(message.id, view);
    els.messages.append(view.node);
    return view;
  }

  function addMessage(message) {
    els.welcome.hidden = true;
    if (message.role === "user") {
      addQuestion(message);
    } else {
      addReply(message);
    }
  }

  function scrollToEnd() {
    var nearEnd = els.messages.scrollHeight - els.messages.scrollTop - els.messages.clientHeight < 160;
    if (nearEnd) els.messages.scrollTop = els.messages.scrollHeight;
  }

  function openReplies() {
    var open = [];
    state.replies.forEach(function (view) {
      if (view.isOpen()) open.push(view);
    });
    return open;
  }

  function refreshStopButton() {
    var streaming = openReplies().length > 0;
    els.stop.hidden = !streaming;
    els.send.hidden = streaming;
    // Nothing switches or branches while a reply is written.
    els.messages.querySelectorAll(".edit-question, .branch-nav").forEach(function (node) {
      node.classList.toggle("is-waiting", streaming);
    });
  }

  /* ----------------------------------------------------------------- socket */

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/chat/");
    state.socket = socket;

    socket.addEventListener("open", function () {
      state.reconnectDelay = 500;
      if (state.everConnected) showBanner(t("connection.back"), 1500);
      else hideBanner();
      state.everConnected = true;
      watch();
      var waiting = state.outbox;
      state.outbox = [];
      waiting.forEach(sendAction);
    });
    socket.addEventListener("message", function (message) {
      handle(JSON.parse(message.data));
    });
    socket.addEventListener("close", function (event) {
      state.socket = null;
      if (event.code === 4401) {
        // The session ended: the page asks to sign in, unless it is already
        // on its way elsewhere, as when this very page signed out.
        if (!state.leaving) window.location.reload();
        return;
      }
      showBanner(t("connection.lost"));
      window.setTimeout(connect, state.reconnectDelay);
      state.reconnectDelay = Math.min(state.reconnectDelay * 2, 10000);
    });
  }

  /* Follow the conversation, and catch up on the replies shown as open. */
  function watch() {
    if (!state.conversationId) return;
    sendAction({
      action: "watch",
      conversation_id: state.conversationId,
      open_replies: openReplies().map(function (view) { return view.id; })
    });
  }

  function sendAction(action) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
      // Sent when the socket opens; the composer keeps its text until the
      // server confirms, so nothing is lost if the page is closed meanwhile.
      state.outbox.push(action);
      if (state.everConnected) showBanner(t("connection.lost"));
      return;
    }
    state.socket.send(JSON.stringify(action));
  }

  function handle(message) {
    if (message.type === "replies") {
      message.events.forEach(function (event) {
        var view = state.replies.get(event.message_id);
        if (view) view.apply(event);
      });
    } else if (message.type === "snapshot") {
      var target = state.replies.get(message.message_id);
      if (target) {
        if (message.message.seq > target.seq) target.load(message.message);
        message.events.forEach(function (event) { target.apply(event); });
      }
    } else if (message.type === "posted") {
      handlePosted(message);
    } else if (message.type === "path") {
      if (message.conversation_id === state.conversationId) drawPath(message.messages);
    } else if (message.type === "renamed") {
      showTitle(message.conversation_id, message.title);
    } else if (message.type === "refused") {
      // The question was not taken; it may be sent again, changed.
      state.pendingToken = null;
      showComposerError(t("refused." + message.code, message));
    }
    scrollToEnd();
  }

  function handlePosted(message) {
    if (!state.conversationId) {
      state.conversationId = message.conversation.id;
      window.history.pushState({}, "", message.conversation.url);
      // Forms that come back to this page (the language switch) must come
      // back to the conversation, not to the empty page it started as.
      document.querySelectorAll("input[name=next]").forEach(function (input) {
        input.value = message.conversation.url;
      });
      addToSidebar(message.conversation);
      showToolbar(message.conversation);
      document.title = message.conversation.title + " · " + document.title;
    }
    if (message.client_token && message.client_token === state.pendingToken) {
      els.text.value = "";
      state.pendingToken = null;
      state.attachments = [];
      drawAttachments();
    }
    // Another tab's question arrives once from the group; never draw twice.
    if (!state.replies.has(message.reply.id)) {
      if (message.question.parent_id === lastShownId()) {
        addMessage(message.question);
        addMessage(message.reply);
      } else {
        // It follows a branch this page does not show: ask for the path.
        sendAction({ action: "path", conversation_id: state.conversationId });
      }
    }
    // The place the reply may expect in the model's queue, estimated as it
    // was posted: shown at once, until the worker reports its own.
    var view = state.replies.get(message.reply.id);
    if (view && message.expected_queue) {
      view.apply({
        kind: "queue",
        expected: true,
        position: message.expected_queue.position,
        eta: message.expected_queue.eta,
      });
    }
    refreshStopButton();
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function addToSidebar(conversation) {
    var empty = els.list.querySelector(".empty-list");
    if (empty) empty.remove();
    var link = el("a", "", conversation.title);
    link.href = conversation.url;
    link.dataset.conversationId = conversation.id;
    link.setAttribute("aria-current", "page");
    var today = todayGroup();
    today.insertBefore(link, today.querySelector("a"));
  }

  /* A title the model suggested, in the sidebar and the toolbar. */
  function showTitle(conversationId, title) {
    var link = els.list.querySelector('[data-conversation-id="' + conversationId + '"]');
    if (link) link.textContent = title;
    if (conversationId !== state.conversationId) return;
    var input = document.querySelector("[data-rename-input]");
    if (document.activeElement !== input) input.value = title;
    document.title = title + " · " + document.title.split(" · ").pop();
  }

  /* Point the hidden toolbar, drawn for conversation 0, at the new one. */
  function showToolbar(conversation) {
    var toolbar = document.querySelector("[data-conversation-toolbar]");
    var from = "/c/0/";
    var to = "/c/" + conversation.id + "/";
    toolbar.querySelectorAll("form").forEach(function (form) {
      form.setAttribute("action", form.getAttribute("action").replace(from, to));
    });
    toolbar.querySelectorAll("a").forEach(function (link) {
      link.setAttribute("href", link.getAttribute("href").replace(from, to));
    });
    toolbar.querySelectorAll("input[name=next]").forEach(function (input) {
      input.value = input.value.replace(from, to);
    });
    toolbar.querySelectorAll("input[name=conversation]").forEach(function (input) {
      input.value = String(conversation.id);
    });
    if (els.newChatPreset) els.newChatPreset.closest("label").hidden = true;
    document.dispatchEvent(new CustomEvent("chat:conversation-started", {
      detail: { preset: els.newChatPreset ? els.newChatPreset.value : "" }
    }));
    toolbar.querySelector("[data-rename-input]").value = conversation.title;
    toolbar.hidden = false;
  }

  /* The sidebar's "today" group, made after the pinned one if missing. */
  function todayGroup() {
    var group = els.list.querySelector('[data-group="today"]');
    if (group) return group;
    group = el("section", "conversation-group");
    group.dataset.group = "today";
    group.append(el("h2", "", t("today")));
    var pinned = els.list.querySelector('[data-group="pinned"]');
    els.list.insertBefore(group, pinned ? pinned.nextSibling : els.list.firstChild);
    return group;
  }

  /* A search result links to #message-N: show that message, marked. */
  function showLinkedMessage() {
    var match = /^#message-(\d+)$/.exec(window.location.hash);
    var node = match && document.getElementById("message-" + match[1]);
    if (!node) return false;
    node.classList.add("linked");
    node.scrollIntoView({ block: "center" });
    return true;
  }

  /* --------------------------------------------------------------- composer */

  /* Whether a question can be sent now; if not, the composer says why. */
  function questionFits(text) {
    hideComposerError();
    if (!text.trim()) {
      showComposerError(t("refused.empty"));
      return false;
    }
    if (text.length > pageData.maxMessageChars) {
      showComposerError(t("refused.too_long", { size: text.length, limit: pageData.maxMessageChars }));
      return false;
    }
    if (openReplies().length > 0) {
      showComposerError(t("refused.busy"));
      return false;
    }
    return true;
  }

  function submit() {
    var text = els.text.value;
    if (!questionFits(text)) return;
    if (state.uploading > 0) {
      showComposerError(t("attach.wait"));
      return;
    }

    // A second Enter before the server has taken the first question would
    // send it twice and pay for two replies. An answer that never comes
    // (the socket dropped) frees the composer after a while.
    if (state.pendingToken && Date.now() - state.pendingSince < PENDING_SEND_MS) return;
    state.pendingToken = String(Date.now()) + Math.random().toString(16).slice(2);
    state.pendingSince = Date.now();
    sendAction({
      action: "send",
      conversation_id: state.conversationId,
      text: text,
      model: els.model.value,
      parent_id: lastShownId(),
      attachment_ids: state.attachments.map(function (a) { return a.id; }),
      // Only a new conversation starts from a preset; later ones are
      // applied in the conversation's settings (static/chat/settings.js).
      preset: !state.conversationId && els.newChatPreset ? els.newChatPreset.value : "",
      client_token: state.pendingToken
    });
  }

  /* ------------------------------------------------------------ attachments */

  function uploadAttachment(file) {
    var form = new FormData();
    form.append("file", file);
    state.uploading += 1;
    hideComposerError();
    window.fetch(pageData.attachUrl, {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { "X-CSRFToken": pageData.csrfToken }
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error || t("attach.failed"));
        state.attachments.push(body);
      });
    }).catch(function (error) {
      showComposerError(file.name + ": " + (error.message || t("attach.failed")));
    }).then(function () {
      state.uploading -= 1;
      drawAttachments();
    });
  }

  function drawAttachments() {
    els.chips.replaceChildren();
    state.attachments.forEach(function (attachment, index) {
      var chip = el("li", "attachment-chip", "📎 " + attachment.name);
      var remove = el("button", "link", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", t("attach.remove") + " " + attachment.name);
      remove.addEventListener("click", function () {
        state.attachments.splice(index, 1);
        drawAttachments();
      });
      chip.append(remove);
      els.chips.append(chip);
    });
    if (state.uploading > 0) els.chips.append(el("li", "muted", t("attach.uploading")));
    els.chips.hidden = els.chips.children.length === 0;
  }

  /* Files from the 📎 button, the clipboard or a drop: one path for all. */
  function attachFiles(files) {
    Array.prototype.forEach.call(files, uploadAttachment);
    drawAttachments();
  }

  els.attachInput.addEventListener("change", function () {
    attachFiles(els.attachInput.files);
    els.attachInput.value = "";
  });

  /*
   * The files a paste carries, or none when it should paste as text. Office
   * and some browsers put a picture of the copied text beside the text
   * itself; that picture is a rendering, not a file the user meant, so a
   * clipboard with text and only pictures pastes the text. A file copied in
   * a file manager comes with its path as text: a document is attached, but
   * a picture copied that way pastes its path instead of being refused.
   */
  function pastedFiles(clipboard) {
    var files = clipboard ? Array.prototype.slice.call(clipboard.files) : [];
    var hasText = Boolean(clipboard && clipboard.getData("text/plain"));
    var onlyPictures = files.every(function (file) { return /^image\//.test(file.type); });
    return hasText && onlyPictures ? [] : files;
  }

  els.composer.addEventListener("paste", function (event) {
    var files = pastedFiles(event.clipboardData);
    if (!files.length) return;
    event.preventDefault();
    attachFiles(files);
  });

  /* Whether a drag carries files, rather than text selected on a page. */
  function draggingFiles(event) {
    var types = event.dataTransfer ? event.dataTransfer.types : [];
    return Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  // dragenter and dragleave fire for every element the pointer crosses in
  // the pane; counting them tells when it has left the pane altogether.
  var dragDepth = 0;

  function showDropTarget(shown) {
    els.dropTarget.hidden = !shown;
    els.pane.classList.toggle("is-dropping", shown);
  }

  els.pane.addEventListener("dragenter", function (event) {
    if (!draggingFiles(event)) return;
    dragDepth += 1;
    showDropTarget(true);
  });
  els.pane.addEventListener("dragover", function (event) {
    if (!draggingFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  els.pane.addEventListener("dragleave", function (event) {
    if (!draggingFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) showDropTarget(false);
  });
  els.pane.addEventListener("drop", function (event) {
    if (!draggingFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    showDropTarget(false);
    attachFiles(event.dataTransfer.files);
  });
  // A file dropped beside the pane (on the sidebar) would make the browser
  // open it in place of the page, and a half-typed question with it.
  document.addEventListener("dragover", function (event) {
    if (draggingFiles(event)) event.preventDefault();
  });
  document.addEventListener("drop", function (event) {
    if (draggingFiles(event)) event.preventDefault();
  });

  function showComposerError(text) {
    els.error.textContent = text;
    els.error.hidden = false;
  }

  function hideComposerError() {
    els.error.hidden = true;
  }

  function showBanner(text, hideAfterMs) {
    els.banner.textContent = text;
    els.banner.hidden = false;
    if (hideAfterMs) window.setTimeout(hideBanner, hideAfterMs);
  }

  function hideBanner() {
    els.banner.hidden = true;
  }

  els.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });
  els.text.addEventListener("keydown", function (event) {
    // Enter while an input method is composing (pinyin) picks a candidate.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  function stopOpenReplies() {
    openReplies().forEach(function (view) {
      sendAction({ action: "stop", message_id: view.id });
    });
  }

  els.stop.addEventListener("click", stopOpenReplies);

  // Shortcuts, as in the chat tools researchers already use: Ctrl+Shift+O a
  // new chat, Shift+Esc the composer, Ctrl+K search, Esc stops a reply.
  document.addEventListener("keydown", function (event) {
    var mod = event.ctrlKey || event.metaKey;
    var key = event.key.toLowerCase();
    if (mod && event.shiftKey && key === "o") {
      event.preventDefault();
      window.location.href = document.querySelector("[data-new-chat]").href;
    } else if (event.shiftKey && event.key === "Escape") {
      event.preventDefault();
      els.text.focus();
    } else if (mod && !event.shiftKey && key === "k") {
      event.preventDefault();
      document.querySelector("[data-search-input]").focus();
    } else if (event.key === "Escape" && openReplies().length > 0) {
      event.preventDefault();
      stopOpenReplies();
    }
  });

  // The thinking timer in an open panel ticks once a second. A reply that
  // has been quiet for a while is asked after, in case an event was lost on
  // the way (a server restart, a network blip the socket did not notice).
  window.setInterval(function () {
    var quiet = false;
    openReplies().forEach(function (view) {
      view.update();
      if (Date.now() - view.lastEventAt > QUIET_REPLY_MS) {
        view.lastEventAt = Date.now();
        quiet = true;
      }
    });
    if (quiet) watch();
  }, 1000);

  // On a phone the sidebar slides over the conversation.
  var sidebarToggle = document.querySelector("[data-sidebar-toggle]");
  sidebarToggle.addEventListener("click", function () {
    var open = document.body.classList.toggle("sidebar-open");
    sidebarToggle.setAttribute("aria-expanded", String(open));
  });

  pageData.messages.forEach(addMessage);
  if (!showLinkedMessage()) els.messages.scrollTop = els.messages.scrollHeight;
  // Other pages ("send to chat") open a new chat with their text ready.
  var prefill = new URLSearchParams(window.location.search).get("prefill");
  if (prefill && !state.conversationId) els.text.value = prefill;
  refreshStopButton();
  window.addEventListener("beforeunload", function () { state.leaving = true; });
  connect();
  // Until now Enter in the composer would only add a line; tests wait for this.
  document.documentElement.dataset.chatReady = "true";
}());
