// Copy buttons: <button data-copy="field-id" data-status="status-id" hidden> copies the
// field's value to the clipboard and says so in the status element (an aria-live region).
// Shown only where the clipboard can be written (a secure context); the field can always
// be selected and copied by hand.
(function () {
  "use strict";

  function say(status, text) {
    if (status) {
      status.textContent = text;
    }
  }

  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("data-status"));
    if (!field) {
      return;
    }
    say(status, "");
    navigator.clipboard.writeText(field.value).then(
      function () {
        say(status, "Copied");
      },
      function () {
        field.focus();
        field.select();
        say(status, "Could not copy: the secret is selected, copy it by hand.");
      }
    );
  }

  function start() {
    if (!navigator.clipboard || !window.isSecureContext) {
      return;
    }
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i += 1) {
      var button = buttons[i];
      button.hidden = false;
      button.addEventListener("click", copy.bind(null, button));
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
