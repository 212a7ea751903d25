// The dashboard's only script: ask before a rollback, and keep the request rates live (server-sent events).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  if (!document.querySelector(".rate")) return;
  const base = document.querySelector("link[rel=stylesheet]").getAttribute("href").replace(/\/static\/.*$/, "");
  const live = new EventSource(base + "/live");
  live.onmessage = (message) => {
    const rates = JSON.parse(message.data);
    for (const [service, value] of Object.entries(rates)) {
      for (const el of document.querySelectorAll(`.rate[data-service="${CSS.escape(service)}"]`)) {
        el.textContent = value.rate.toFixed(1);
      }
      for (const el of document.querySelectorAll(`polyline[data-service="${CSS.escape(service)}"]`)) {
        el.setAttribute("points", value.points);
      }
    }
  };
});
