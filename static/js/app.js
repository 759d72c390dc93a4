// Light behaviour for server-rendered pages; no build step.
//  - [data-poll-url]: refresh the element's content from that URL every 1.5 s
//    while the content lacks [data-done] (an operation is in progress), then
//    slow down to every 10 s so state changes made elsewhere still show.
//  - form[data-confirm]: ask before submitting a destructive action (listened for on
//    the document, so forms that polling puts in later ask too).
//  - button[data-reveal]: bring the form with that id into view and focus its first
//    field (Terminate: the form asking for the password lives outside the polled part).
(function () {
  "use strict";

  function poll(box) {
    var url = box.getAttribute("data-poll-url");
    var busy = !box.querySelector("[data-done]");
    setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          // Signed out meanwhile: the fetch followed the redirect to the login page.
          if (r.redirected) { window.location.reload(); return Promise.reject("signed out"); }
          return r.ok ? r.text() : Promise.reject(r.status);
        })
        .then(function (html) { box.innerHTML = html; })
        .catch(function () { /* keep the last content; try again */ })
        .finally(function () { poll(box); });
    }, busy ? 1500 : 10000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(poll);
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
