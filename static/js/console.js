// The VPS page's web console (#console): xterm.js over the console's WebSocket.
//  - "Open the console" asks the API for a one-time ticket (same-origin POST with the
//    page's CSRF token), then opens the WebSocket it names with the terminal's size.
//  - Output arrives as binary messages, status as JSON text ({"type": "open"} and
//    {"type": "closed", "reason", "message"} before the server closes the socket).
//  - Keys and pastes go out as binary messages; a size change (the window resized, the
//    terminal refitted) as {"type": "resize", "rows", "cols"}.
//  - Copy: selecting text copies it (and Ctrl+Shift+C); paste: Ctrl+Shift+V, Ctrl+V or the
//    right-click menu (the browser's paste reaches the terminal).
// The Content-Security-Policy refuses inline styles in markup. xterm.js makes <style>
// elements of its own (its theme, its cell sizes): the policy allows those carrying the
// page's nonce, so <style> elements made by scripts on this page get it. It also colours
// some cells (24-bit colours, the selection) with setAttribute("style"), which the policy
// refuses too; on elements made here that goes through the style object instead (the
// CSSOM, which the policy leaves to scripts from this host), with the same result.
(function () {
  "use strict";

  var card = document.getElementById("console");
  if (!card) return;
  var nonce = card.getAttribute("data-style-nonce");
  var makeElement = document.createElement;
  var setAttribute = Element.prototype.setAttribute;
  function setAttributeByCssom(name, value) {
    if (String(name).toLowerCase() === "style") this.style.cssText = value;
    else setAttribute.call(this, name, value);
  }
  document.createElement = function (name) {
    var element = makeElement.apply(document, arguments);
    var tag = String(name).toLowerCase();
    if (tag === "style" && nonce) setAttribute.call(element, "nonce", nonce);
    else if (tag === "span" || tag === "div") element.setAttribute = setAttributeByCssom;
    return element;
  };

  var openButton = document.getElementById("btn-console");
  var closeButton = document.getElementById("btn-console-close");
  var statusLine = document.getElementById("console-status");
  var screen = document.getElementById("console-screen");
  var encoder = new TextEncoder();
  var term = null, fit = null, socket = null, resizeTimer = null;

  function say(text, isError) {
    statusLine.textContent = text || "";
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function csrfToken() {
    var field = document.querySelector("#console-csrf input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function copy(text) {
    if (text && navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).catch(function () { /* denied: select + menu */ });
    }
  }

  function makeTerminal() {
    if (term) term.dispose();
    screen.hidden = false;
    term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14,
                          fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    fit.fit();
    term.attachCustomKeyEventHandler(function (event) {
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
      var key = event.key.toLowerCase();
      if (key === "c") { copy(term.getSelection()); event.preventDefault(); return false; }
      if (key === "v") return false;  // the browser's paste event brings the text
      return true;
    });
    term.onSelectionChange(function () { copy(term.getSelection()); });
    term.onData(function (data) { send(encoder.encode(data)); });
    term.onBinary(function (data) {
      send(Uint8Array.from(data, function (c) { return c.charCodeAt(0) & 255; }));
    });
    term.onResize(function (size) {
      send(JSON.stringify({ type: "resize", rows: size.rows, cols: size.cols }));
    });
    term.focus();
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(message);
  }

  function setOpen(isOpen) {
    openButton.hidden = isOpen;
    closeButton.hidden = !isOpen;
    card.setAttribute("data-state", isOpen ? "open" : "closed");
  }

  function open() {
    openButton.disabled = true;
    say("Connecting…");
    makeTerminal();
    fetch(card.getAttribute("data-ticket-url"), {
      method: "POST", credentials: "same-origin", body: "{}",
      headers: { "X-CSRFToken": csrfToken(), "Content-Type": "application/json",
                 "Accept": "application/json" }
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body.detail || ("refused (" + response.status + ")"));
        return body;
      });
    }).then(function (ticket) {
      connect(ticket.url);
    }).catch(function (error) {
      openButton.disabled = false;
      say("The console could not be opened: " + error.message, true);
    });
  }

  function connect(url) {
    var separator = url.indexOf("?") < 0 ? "?" : "&";
    socket = new WebSocket(url + separator + "rows=" + term.rows + "&cols=" + term.cols);
    socket.binaryType = "arraybuffer";
    var told = null;  // the server's reason, sent just before it closes
    socket.onopen = function () { setOpen(true); openButton.disabled = false; };
    socket.onmessage = function (event) {
      if (typeof event.data !== "string") { term.write(new Uint8Array(event.data)); return; }
      var status;
      try { status = JSON.parse(event.data); } catch (e) { return; }
      if (status.type === "open") {
        say("Connected. Press Enter if the screen stays empty.");
        send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
      } else if (status.type === "closed") {
        told = status;
      }
    };
    socket.onclose = function (event) {
      setOpen(false);
      openButton.disabled = false;
      socket = null;
      if (told && told.reason !== "client") {
        say("The console closed: " + told.message, told.reason !== "idle");
      } else if (told || event.code === 1000) {
        say("The console is closed.");
      } else {
        say("The connection to the console was lost (" + event.code + ").", true);
      }
      if (term) term.blur();
    };
  }

  openButton.addEventListener("click", open);
  closeButton.addEventListener("click", function () {
    if (socket) socket.close(1000, "closed by the user");
  });
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (fit && !screen.hidden) fit.fit(); }, 100);
  });
})();
