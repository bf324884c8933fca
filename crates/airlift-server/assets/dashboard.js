// Airlift dashboard: the little the server-rendered pages need from a
// browser with JavaScript on. Every page reads fully without it.
"use strict";

(function () {
  // Timestamps arrive in UTC (<time datetime=… title="… UTC">); show the
  // viewer's local time and keep UTC on hover.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
    });
  }

  // Live regions: <section data-live-on="deployment:ID overview"
  // data-live-src="/ui/…/fragment">. One EventSource per page; a named event
  // refreshes every region listening for it, at most once per 300 ms.
  function live() {
    var topics = document.body.getAttribute("data-live");
    if (!topics || !window.EventSource) return;
    var pending = {};
    var source = new EventSource("/ui/live?topics=" + encodeURIComponent(topics));
    topics.split(" ").forEach(function (topic) {
      source.addEventListener(topic, function () {
        if (pending[topic]) return;
        pending[topic] = setTimeout(function () {
          pending[topic] = null;
          document.querySelectorAll("[data-live-on]").forEach(function (el) {
            var on = el.getAttribute("data-live-on").split(" ");
            if (on.indexOf(topic) < 0) return;
            htmx.ajax("GET", el.getAttribute("data-live-src"), { target: el, swap: "outerHTML" });
          });
        }, 300);
      });
    });
    source.addEventListener("open", function () {
      document.body.classList.remove("live-lost");
    });
    source.addEventListener("error", function () {
      document.body.classList.add("live-lost");
    });
  }

  // <input type=checkbox data-select-all=NAME> ticks every NAME box of its form.
  function selectAll(root) {
    root.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var name = box.getAttribute("data-select-all");
        box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
          other.checked = box.checked;
        });
      });
    });
  }

  // <form data-upload=URL>: sends the chosen file as the request body (what
  // the API takes), showing progress, then shows the server's answer.
  function uploads(root) {
    root.querySelectorAll("form[data-upload]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var file = form.querySelector("input[type=file]").files[0];
        var bar = form.querySelector("progress");
        var said = form.querySelector("[data-upload-result]");
        if (!file) { said.textContent = "Choose a package file first."; return; }
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.getAttribute("data-upload"));
        xhr.setRequestHeader("Content-Type", "application/octet-stream");
        xhr.setRequestHeader("X-CSRF-Token", document.body.getAttribute("data-csrf"));
        xhr.setRequestHeader("HX-Request", "true");
        xhr.upload.addEventListener("progress", function (e) {
          if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; }
        });
        xhr.addEventListener("load", function () {
          var go = xhr.getResponseHeader("HX-Redirect");
          if (xhr.status < 300 && go) { window.location = go; return; }
          said.textContent = xhr.responseText || ("The server answered " + xhr.status + ".");
          said.classList.add("error");
        });
        xhr.addEventListener("error", function () {
          said.textContent = "The upload broke off: the server could not be reached.";
          said.classList.add("error");
        });
        said.textContent = "Uploading " + file.name + "…";
        said.classList.remove("error");
        bar.hidden = false;
        xhr.send(file);
      });
    });
  }

  // A sign-in link (`airlift demo --keep` prints one) carries the token in
  // the fragment, which browsers never send to a server: fill the form with
  // it, drop it from the address bar and history, and sign in.
  function signInFromFragment() {
    var form = document.querySelector("form[action='/ui/sign-in']");
    var hash = window.location.hash;
    if (!form || hash.indexOf("#token=") !== 0) return;
    var token;
    try { token = decodeURIComponent(hash.slice("#token=".length)); } catch (e) { return; }
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (!token) return;
    form.querySelector("input[name=token]").value = token;
    form.submit();
  }

  function enhance(root) {
    localTimes(root);
    selectAll(root);
    uploads(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    signInFromFragment();
    enhance(document);
    live();
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    enhance(event.target);
  });
})();
