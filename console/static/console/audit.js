// A refused filter (400) explains itself in the results, as it does without JavaScript:
// htmx leaves error responses unswapped unless told otherwise.
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.xhr.status === 400 && event.detail.target.id === "audit-results") {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
