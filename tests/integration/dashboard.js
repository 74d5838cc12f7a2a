// Runs the operator dashboard's script (web/index.html, as the gateway
// serves it) in node against a minimal stand-in for the browser, feeds it
// live-stream messages, and prints what its tables then show:
//   node dashboard.js PAGE.html MESSAGES.json
// -> {"transfers": [[cell, ...], ...], "notices": [...]}, newest row first.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [page, messages] = [fs.readFileSync(process.argv[2], "utf8"),
                          JSON.parse(fs.readFileSync(process.argv[3], "utf8"))];
const script = page.match(/<script>([\s\S]*?)<\/script>/);
if (!script) throw new Error("the page has no <script>");

// Only what the page uses: text, class, children, rows, listeners.
class Element {
  constructor() { this.textContent = ""; this.className = ""; this.children = []; this.value = ""; }
  append(...els) { this.children.push(...els); }
  prepend(el) { this.children.unshift(el); }
  replaceChildren() { this.children = []; }
  get rows() { return this.children; }
  deleteRow(i) { this.children.splice(i < 0 ? this.children.length + i : i, 1); }
  addEventListener() {}
}
const byId = new Map();
const document = {
  getElementById(id) {
    // Only ids the page has: a table it lacks must not appear to exist.
    if (!new RegExp(`id="${id}"`).test(page)) return null;
    if (!byId.has(id)) byId.set(id, new Element());
    return byId.get(id);
  },
  createElement() { return new Element(); },
};
const sockets = [];
class WebSocket { constructor(url) { this.url = url; sockets.push(this); } close() {} }

vm.runInNewContext(script[1], {
  document, WebSocket, URLSearchParams, console,
  location: { protocol: "http:", host: "127.0.0.1:8080" },
  sessionStorage: { getItem: () => "a-key", setItem() {} },
  fetch: () => Promise.reject(new Error("no network here")),
  setInterval() {},
});
if (sockets.length !== 1 || !sockets[0].onmessage) throw new Error("the page opened no stream");
for (const m of messages) sockets[0].onmessage({ data: JSON.stringify(m) });

const table = (id) => (byId.get(id) || new Element()).rows.map(
  (row) => row.children.map((td) => String(td.textContent)));
process.stdout.write(JSON.stringify({ transfers: table("transfers"), notices: table("notices") }));
