// Light behaviour for server-rendered pages; no build step.
//  - [data-poll-url]: refresh the element's content from that URL when its push
//    socket ([data-live-socket], hosting/operations/live_socket.py) says it changed;
//    without the socket, every 1.5 s while the content lacks [data-done] (an
//    operation is in progress), else every 10 s.
//  - form[data-confirm]: ask before submitting a destructive action (listened for on
//    the document, so forms that polling puts in later ask too).
//  - button[data-reveal]: bring the form with that id into view and focus its first
//    field (Terminate: the form asking for the password lives outside the polled part).
(function () {
  "use strict";

  // One live box: refreshed from its [data-poll-url] by a timer, and at once when its
  // push socket ([data-live-socket]) says "changed". While the socket is open the timer
  // only backs it up (every 10 s); closed, the box polls as before and the socket is
  // tried again, each time later (up to 30 s). A refresh asked for while one is under
  // way runs right after it, so the last change is never missed.
  function watch(box) {
    var url = box.getAttribute("data-poll-url");
    var socketUrl = box.getAttribute("data-live-socket");
    var timer = null, fetching = false, again = false, pushed = false;

    function schedule() {
      var busy = !box.querySelector("[data-done]");
      clearTimeout(timer);
      timer = setTimeout(refresh, pushed || !busy ? 10000 : 1500);
    }

    function refresh() {
      if (fetching) { again = true; return; }
      fetching = true;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          // Signed out meanwhile: the fetch followed the redirect to the login page.
          if (r.redirected) { window.location.reload(); return Promise.reject("signed out"); }
          return r.ok ? r.text() : Promise.reject(r.status);
        })
        .then(function (html) { box.innerHTML = html; })
        .catch(function () { /* keep the last content; try again */ })
        .finally(function () {
          fetching = false;
          if (again) { again = false; refresh(); } else { schedule(); }
        });
    }

    function listen(wait) {
      var socket = new WebSocket(socketUrl);
      socket.onopen = function () {
        pushed = true;
        wait = 1000;
        box.setAttribute("data-live", "open");
        refresh();  // what changed before the socket listened
      };
      socket.onmessage = function () {
        box.setAttribute("data-pushes", String(Number(box.getAttribute("data-pushes") || 0) + 1));
        refresh();
      };
      socket.onclose = function (event) {
        pushed = false;
        box.setAttribute("data-live", "closed");
        schedule();
        if (event.code !== 4401) {  // 4401: signed out; the next poll reloads the page
          setTimeout(function () { listen(Math.min(wait * 2, 30000)); }, wait);
        }
      };
    }

    schedule();
    if (socketUrl && "WebSocket" in window) listen(1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(watch);
    document.addEventListener("submit", function (event) {
      var form = event.target.closest("form[data-confirm]");
      if (form && !window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
    document.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-reveal]");
      var form = button && document.getElementById(button.getAttribute("data-reveal"));
      if (!form) return;
      form.scrollIntoView({ block: "center" });
      var field = form.querySelector("input:not([type=hidden])");
      if (field) field.focus();
    });
  });
})();
