// The dashboard's only script: ask before an action, keep the live parts live (server-sent events).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const base = document.querySelector("link[rel=stylesheet]").getAttribute("href").replace(/\/static\/.*$/, "");

  // confirmation, delegated: forms swapped in by the live stream get it too
  document.addEventListener("submit", (event) => {
    const form = event.target;
    let question = form.dataset.confirm;
    if (form.dataset.confirmScale !== undefined) {
      question = `Scale ${form.dataset.confirmScale} to ${form.elements.replicas.value} instance(s)?`;
    }
    if (question && !window.confirm(question)) event.preventDefault();
  });

  if (document.querySelector(".rate")) {
    const swapped = {};  // fragment name -> the HTML last put in, so an unchanged one is left alone
    const live = new EventSource(base + "/live");
    live.onmessage = (message) => {
      const data = JSON.parse(message.data);
      for (const [service, value] of Object.entries(data.rates)) {
        for (const el of document.querySelectorAll(`.rate[data-service="${CSS.escape(service)}"]`)) {
          el.textContent = value.rate.toFixed(1);
        }
        for (const el of document.querySelectorAll(`polyline[data-service="${CSS.escape(service)}"]`)) {
          el.setAttribute("points", value.points);
        }
      }
      for (const el of document.querySelectorAll("[data-live]")) {
        const html = data[el.dataset.live];
        if (typeof html === "string" && swapped[el.dataset.live] !== html) {
          swapped[el.dataset.live] = html;
          el.innerHTML = html;  // rendered and escaped by the agent's templates
        }
      }
    };
  }

  const events = document.querySelector("#events[data-follow]");
  if (events) {
    const body = events.querySelector("tbody");
    const stream = new EventSource(events.dataset.follow);
    stream.onmessage = (message) => {
      const e = JSON.parse(message.data);
      const none = body.querySelector("tr.none");
      if (none) none.remove();
      const row = document.createElement("tr");
      row.className = "event fresh";
      row.dataset.kind = e.kind;
      for (const text of [e.when, e.kind, e.service, e.instance, e.message]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      row.lastChild.className = "message";
      body.insertBefore(row, body.firstChild);
    };
  }

  const log = document.querySelector("#log[data-follow]");
  if (log) {
    const stream = new EventSource(log.dataset.follow);
    const end = () => window.scrollTo(0, document.body.scrollHeight);
    stream.onopen = () => { document.querySelector("#following").textContent = "following"; };
    stream.onmessage = (message) => {
      const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      log.appendChild(document.createTextNode(JSON.parse(message.data).join("\n") + "\n"));
      if (atEnd) end();
    };
    end();
  }
});
