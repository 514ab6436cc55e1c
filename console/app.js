// Cairn console: a hash-routed single page over the HTTP API (docs/api.md). No framework and no
// build step: each view is a <template> of index.html bound here. The API key (when auth is on)
// lives in sessionStorage and goes out as a Bearer header; nothing leaves this origin.
"use strict";

const KEY = "cairn.key";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
let me = null; // GET /me: {name, tier, scopes, auth}
let viewAbort = null; // aborts the previous view's requests and streams

// ---------------------------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body, headers) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || "http_" + status;
    this.retry = headers.get("retry-after");
    this.body = body;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { authorization: "Bearer " + key } : {};
}

async function api(method, path, body, signal) {
  const headers = { accept: "application/json", ...authHeaders() };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, signal });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data, r.headers);
  return data;
}

/** A sentence for an API failure: what happened and what to do. */
function describe(e) {
  if (e.name === "AbortError") return "";
  if (!(e instanceof ApiError)) return "The server could not be reached: " + e.message;
  switch (e.status) {
    case 401: return "Sign in: this server needs an API key (" + e.message + ").";
    case 403: return "This key may not do that: " + e.message;
    case 429: return "Rate limited: " + e.message + (e.retry ? ` Retry in ${e.retry} s.` : "");
    case 503: return "The server is busy: " + e.message + (e.retry ? ` Retry in ${e.retry} s.` : "");
    case 507: return "The server's disk is full: " + e.message;
  }
  if (e.code === "generator_unavailable") return "No answer model is available: " + e.message;
  return e.message + " (" + e.code + ")";
}

function report(e) {
  const msg = describe(e);
  if (!msg) return;
  $("#status").textContent = msg;
  if (e instanceof ApiError && e.status === 401) showSignIn(msg);
}

function clearStatus() {
  $("#status").textContent = "";
}

const can = (scope) => !!me && me.scopes.includes(scope);

// ------------------------------------------------------------------------------- DOM helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function mount(id) {
  const main = $("#main");
  main.replaceChildren($("#" + id).content.cloneNode(true));
  for (const node of $$("[data-scope]", main)) node.hidden = !can(node.dataset.scope);
  return main;
}

/** A snippet from the API (HTML-escaped text with <mark>): only text and <mark> survive. */
function snippet(html) {
  const doc = new DOMParser().parseFromString("<p>" + (html || ""), "text/html");
  const out = document.createDocumentFragment();
  for (const n of doc.body.firstChild.childNodes) {
    out.append(n.nodeName === "MARK" ? el("mark", { text: n.textContent }) : n.textContent);
  }
  return out;
}

const fmtBytes = (n) =>
  n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
const fmtTime = (s) => (s ? new Date(s).toLocaleString() : "");
const where = (h) =>
  [h.external_id, h.page ? "page " + h.page : null, h.section || null].filter(Boolean).join(" · ");

/** The source a chunk id belongs to: ids are `<source id>-<12 hex of its hash>-<ordinal>`. */
const sourceOfChunk = (id) => id.replace(/-[0-9a-f]{12}-\d+$/, "");
const chunkLink = (sourceId, chunkId) =>
  "#/sources/" + encodeURIComponent(sourceId) + "?chunk=" + encodeURIComponent(chunkId);

// -------------------------------------------------------------------------------- the router

function route() {
  const hash = location.hash.replace(/^#/, "") || "/search";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}

async function render() {
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  const signal = viewAbort.signal;
  clearStatus();
  if (!me) return;
  const { parts, params } = route();
  const tab = parts[0] || "search";
  for (const a of $$("#tabs a")) {
    if (a.dataset.tab === tab) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
    a.parentElement.hidden = !can(a.dataset.scope);
  }
  try {
    if (tab === "ask") await askView(signal);
    else if (tab === "sources" && parts[1]) await sourceView(parts[1], params, signal);
    else if (tab === "sources") await sourcesView(params, signal);
    else if (tab === "graph") await graphView(parts[1], params, signal);
    else if (tab === "ops") await opsView(signal);
    else await searchView(params, signal);
  } catch (e) {
    report(e);
  }
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

// ------------------------------------------------------------------------------------ sign-in

async function whoAmI() {
  try {
    me = await api("GET", "/me");
  } catch (e) {
    me = null;
    if (e instanceof ApiError && e.status === 401) {
      showSignIn(sessionStorage.getItem(KEY) ? describe(e) : "");
      return;
    }
    throw e;
  }
  $("#who-name").textContent = me.auth === "disabled" ? "" : `${me.name} (${me.scopes.join(", ")})`;
  $("#sign-out").hidden = !sessionStorage.getItem(KEY);
}

function showSignIn(message) {
  me = null;
  const main = $("#main");
  main.replaceChildren($("#t-signin").content.cloneNode(true));
  for (const a of $$("#tabs a")) a.parentElement.hidden = true;
  $("#signin-error").textContent = message || "";
  $("#signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#signin-key").value.trim());
    try {
      await whoAmI();
      if (me) {
        clearStatus();
        render();
      }
    } catch (e) {
      $("#signin-error").textContent = describe(e);
    }
  });
  $("#signin-key").focus();
}

// ------------------------------------------------------------------------------------- search

function searchBody(p) {
  const body = { query: p.get("q"), limit: Number(p.get("limit") || 10) };
  for (const k of ["mode", "context_type", "group_by"]) if (p.get(k)) body[k] = p.get(k);
  for (const k of ["use_graph", "rerank", "explain"]) if (p.get(k) === "1") body[k] = true;
  if (p.get("offset")) body.offset = Number(p.get("offset"));
  const meta = {};
  for (const pair of (p.get("meta") || "").split(",")) {
    const i = pair.indexOf("=");
    if (i > 0) meta[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  if (Object.keys(meta).length) body.filters = { metadata: meta };
  return body;
}

async function searchView(params, signal) {
  const main = mount("t-search");
  const form = $("#search-form", main);
  form.q.value = params.get("q") || "";
  for (const k of ["mode", "context_type", "group_by", "limit", "meta"]) {
    if (params.get(k)) form[k].value = params.get(k);
  }
  for (const k of ["use_graph", "rerank", "explain"]) form[k].checked = params.get(k) === "1";
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams({ q: form.q.value });
    for (const k of ["mode", "context_type", "group_by", "meta"]) if (form[k].value) p.set(k, form[k].value);
    if (form.limit.value !== "10") p.set("limit", form.limit.value);
    for (const k of ["use_graph", "rerank", "explain"]) if (form[k].checked) p.set(k, "1");
    go("#/search?" + p);
  });
  if (!params.get("q")) {
    form.q.focus();
    return;
  }
  const body = searchBody(params);
  const r = await api("POST", "/search", body, signal);
  const t = r.timing || {};
  $("#search-meta", main).textContent =
    `${r.results.length} results · ${r.mode}, ${r.context_type}${r.reranked ? ", reranked" : ""} · ` +
    `${r.took_ms.toFixed(1)} ms (embed ${t.embed_ms?.toFixed(1)}, keyword ${t.keyword_ms?.toFixed(1)}, ` +
    `vector ${t.vector_ms?.toFixed(1)}, fusion ${t.fusion_ms?.toFixed(1)}, graph ${t.graph_ms?.toFixed(1)}, ` +
    `rerank ${t.rerank_ms?.toFixed(1)})`;
  $("#search-concepts", main).replaceChildren(
    ...(r.concepts || []).map((c) =>
      el("a", { href: "#/graph/" + encodeURIComponent(c.id), text: `${c.name} (${c.via})` }),
    ),
  );
  const list = $("#results", main);
  list.start = (body.offset || 0) + 1;
  list.replaceChildren(...r.results.map((h) => hitItem(h, body.explain)));
  if (!r.results.length) list.replaceChildren(el("li", { class: "note", text: "No results." }));
  const page = (offset) => {
    const p = new URLSearchParams(params);
    if (offset) p.set("offset", offset);
    else p.delete("offset");
    go("#/search?" + p);
  };
  const prev = $("#prev", main);
  prev.hidden = !body.offset;
  prev.onclick = () => page(Math.max(0, (body.offset || 0) - body.limit));
  const next = $("#next", main);
  next.hidden = r.next_offset == null;
  next.onclick = () => page(r.next_offset);
}

function hitItem(h, explain) {
  const li = $("#t-hit").content.firstElementChild.cloneNode(true);
  const a = $(".open", li);
  a.href = chunkLink(h.source_id, h.chunk_id);
  a.textContent = h.title || h.external_id;
  $(".where", li).textContent = `${where(h)} · score ${h.score.toFixed(4)}`;
  $(".snippet", li).append(snippet(h.snippet));
  if (explain && h.scores) {
    const d = $(".explain", li);
    d.hidden = false;
    $("tbody", d).append(
      ...Object.entries(h.scores).map(([k, v]) =>
        el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: String(v) })),
      ),
    );
  }
  return li;
}

// ---------------------------------------------------------------------------------------- ask

async function askView(signal) {
  const main = mount("t-ask");
  const form = $("#ask-form", main);
  const stop = $("#ask-stop", main);
  let running = null;
  stop.addEventListener("click", () => running && running.abort());
  signal.addEventListener("abort", () => running && running.abort());
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (running) running.abort();
    running = new AbortController();
    stop.disabled = false;
    $("#ask-go", main).disabled = true;
    try {
      await ask(form, running.signal);
    } catch (e) {
      if (e.name !== "AbortError") $("#answer-note", main).textContent = describe(e);
    } finally {
      stop.disabled = true;
      $("#ask-go", main).disabled = false;
      running = null;
    }
  });
  form.question.focus();
}

/** Streams one answer: `sources`, then `token`s and `citation`s, then `done` (or `error`). */
async function ask(form, signal) {
  const answer = $("#answer"), note = $("#answer-note"), meta = $("#answer-meta"), cites = $("#cites");
  answer.replaceChildren();
  note.textContent = meta.textContent = "";
  cites.replaceChildren();
  const body = {
    query: form.question.value,
    stream: true,
    limit: Number(form.limit.value),
    max_tokens: Number(form.max_tokens.value),
  };
  const r = await fetch("/query", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null), r.headers);
  const state = { text: "", citations: [] };
  signal.addEventListener("abort", () => (note.textContent = "Stopped."));
  for await (const [event, data] of sse(r.body, signal)) {
    if (event === "sources") {
      state.citations = data.citations;
      cites.replaceChildren(...data.citations.map(citeItem));
    } else if (event === "token") {
      state.text += data.delta;
      renderAnswer(answer, state);
    } else if (event === "citation") {
      const li = $(`#cite-${data.n}`);
      if (li) li.classList.add("used");
    } else if (event === "done") {
      finish(data, state, note, meta);
    } else if (event === "error") {
      note.textContent = describe(new ApiError(500, { error: data }, new Headers()));
    }
  }
}

function finish(data, state, note, meta) {
  if (data.finish_reason === "no_context") note.textContent = "No evidence found: nothing in the knowledge base matches the question well enough.";
  else if (data.finish_reason === "retrieval_only") note.textContent = "No answer model is configured on this server: the sources it would use are listed.";
  else if (data.finish_reason === "length") note.textContent = "The answer reached its token limit.";
  const t = data.timing || {};
  meta.textContent = [
    data.generator ? `${data.generator.backend} ${data.generator.model}` : null,
    t.ttft_ms != null ? `first token ${t.ttft_ms.toFixed(0)} ms` : null,
    t.total_ms != null ? `total ${t.total_ms.toFixed(0)} ms` : null,
    data.usage ? `${data.usage.completion_tokens} tokens` : null,
  ].filter(Boolean).join(" · ");
  for (const n of data.used || []) $(`#cite-${n}`)?.classList.add("used");
}

/** The answer so far, its `[n]` markers linked to the cited chunk. */
function renderAnswer(node, state) {
  const parts = state.text.split(/(\[\d+\])/);
  node.replaceChildren(
    ...parts.map((p) => {
      const m = /^\[(\d+)\]$/.exec(p);
      const c = m && state.citations.find((c) => c.n === Number(m[1]));
      if (!c) return p;
      return el("a", { class: "cite", href: chunkLink(c.source_id, c.chunk_id), title: c.title, text: p });
    }),
  );
}

function citeItem(c) {
  return el(
    "li",
    { id: "cite-" + c.n, value: c.n },
    el("a", { href: chunkLink(c.source_id, c.chunk_id), text: c.title || c.external_id }),
    el("div", { class: "where", text: where(c) }),
    el("div", { class: "snippet" }, snippet(c.snippet)),
  );
}

/** Server-sent events of a fetch body: yields [event, data]. */
async function* sse(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield [event, JSON.parse(data.join("\n"))];
    }
  }
}

// ------------------------------------------------------------------------------------ sources

async function sourcesView(params, signal) {
  const main = mount("t-sources");
  const cursor = params.get("cursor");
  if (can("ingest")) bindUpload(main);
  const q = new URLSearchParams({ limit: "50" });
  if (cursor) q.set("cursor", cursor);
  const page = await api("GET", "/sources?" + q, undefined, signal);
  const rows = page.sources.map((s) =>
    el(
      "tr",
      {},
      el("td", {}, el("a", { href: "#/sources/" + encodeURIComponent(s.id), text: s.title || s.external_id }),
        s.title && s.title !== s.external_id ? el("div", { class: "where", text: s.external_id }) : null),
      el("td", { text: s.file_type }),
      el("td", { text: fmtBytes(s.size_bytes) }),
      el("td", { text: String(s.chunk_count) }),
      el("td", { text: fmtTime(s.updated_at) }),
      el("td", { class: "meta-cell", text: Object.keys(s.metadata).length ? JSON.stringify(s.metadata) : "" }),
      el("td", {}, can("ingest") ? el("button", { type: "button", class: "secondary", "aria-label": "Delete " + (s.title || s.external_id), text: "Delete", onclick: () => remove(s) }) : null),
    ),
  );
  const tbody = $("#sources-table tbody", main);
  tbody.replaceChildren(...rows);
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: "7", class: "note", text: "No sources yet." })));
  const first = $("#first", main);
  first.hidden = !cursor;
  first.onclick = () => go("#/sources");
  const more = $("#more", main);
  more.hidden = !page.next_cursor;
  more.onclick = () => go("#/sources?cursor=" + encodeURIComponent(page.next_cursor));
}

async function remove(s) {
  if (!(await confirmDialog(`Delete “${s.title || s.external_id}” and all its chunks?`))) return;
  try {
    await api("DELETE", "/sources/" + encodeURIComponent(s.id));
    $("#status").textContent = "";
    render();
  } catch (e) {
    report(e);
  }
}

function confirmDialog(text) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (v) => {
      d.close();
      resolve(v);
    };
    $("#confirm-ok").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    d.oncancel = () => resolve(false);
    d.showModal();
    $("#confirm-cancel").focus();
  });
}

function bindUpload(main) {
  const zone = $("#upload", main);
  const input = $("#files", main);
  input.addEventListener("change", () => uploadAll([...input.files]));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadAll([...e.dataTransfer.files]);
  });
}

async function uploadAll(files) {
  const list = $("#uploads");
  const jobs = files.map((f) => {
    const bar = el("progress", { max: "100", value: "0", "aria-label": "Upload of " + f.name });
    const result = el("span", { class: "result", text: "uploading…" });
    list.append(el("li", { "data-file": f.name }, el("span", { text: f.name }), bar, result));
    return upload(f, bar, result);
  });
  await Promise.all(jobs);
  if (route().parts[0] === "sources" && !route().parts[1]) {
    const keep = list.cloneNode(true);
    await render();
    $("#uploads").replaceWith(keep);
  }
}

/** One file, one request: XHR, because fetch reports no upload progress. */
function upload(file, bar, result) {
  return new Promise((resolve) => {
    const x = new XMLHttpRequest();
    x.open("POST", "/sources");
    for (const [k, v] of Object.entries(authHeaders())) x.setRequestHeader(k, v);
    x.setRequestHeader("accept", "application/json");
    x.upload.onprogress = (e) => e.lengthComputable && (bar.value = (100 * e.loaded) / e.total);
    x.onload = () => {
      bar.value = 100;
      let body = null;
      try {
        body = JSON.parse(x.responseText);
      } catch {}
      const s = body?.sources?.[0];
      if (s) {
        result.className = "result st-" + s.status;
        result.textContent = s.status + (s.error ? ": " + s.error.message : ` (${s.chunks} chunks)`);
      } else {
        const e = new ApiError(x.status, body, { get: (h) => x.getResponseHeader(h) });
        result.className = "result st-failed";
        result.textContent = "failed: " + describe(e);
      }
      resolve();
    };
    x.onerror = () => {
      result.className = "result st-failed";
      result.textContent = "failed: the connection broke";
      resolve();
    };
    const form = new FormData();
    form.append("file", file, file.name);
    x.send(form);
  });
}

async function sourceView(id, params, signal) {
  const main = mount("t-source");
  const target = params.get("chunk");
  const list = $("#chunks", main);
  let offset = 0;
  const more = $("#more-chunks", main);
  const load = async () => {
    const page = await api("GET", `/sources/${encodeURIComponent(id)}/chunks?limit=200&offset=${offset}`, undefined, signal);
    if (offset === 0) sourceFacts(main, page.source, page.total);
    list.append(...page.chunks.map((c) => chunkItem(c, c.chunk_id === target)));
    offset = page.next_offset ?? offset;
    more.hidden = page.next_offset == null;
    return page;
  };
  more.onclick = () => load().catch(report);
  await load();
  // The cited chunk may be further down: load pages until it is in.
  while (target && !$(".target", list) && !more.hidden) await load();
  const t = $(".target", list);
  if (t) {
    t.scrollIntoView({ block: "center" });
    t.focus();
  }
}

function sourceFacts(main, s, total) {
  $("#source-h", main).textContent = s.title || s.external_id;
  const facts = [
    ["id", s.id], ["external id", s.external_id], ["type", s.file_type], ["size", fmtBytes(s.size_bytes)],
    ["chunks", String(total)], ["created", fmtTime(s.created_at)], ["updated", fmtTime(s.updated_at)],
    ["metadata", JSON.stringify(s.metadata)],
  ];
  $("#source-info", main).replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function chunkItem(c, isTarget) {
  const label = [`#${c.ordinal + 1}`, c.page ? "page " + c.page : null, c.section].filter(Boolean).join(" · ");
  return el(
    "li",
    { id: "chunk-" + c.chunk_id, class: isTarget ? "target" : null, tabindex: isTarget ? "-1" : null },
    el("div", { class: "where", text: label }),
    el("p", { class: "text", text: c.text }),
    c.concepts.length
      ? el("ul", { class: "chips", "aria-label": "Concepts" }, ...c.concepts.map((k) =>
          el("li", {}, el("a", { href: "#/graph/" + encodeURIComponent(k.id), text: k.name }))))
      : null,
  );
}

// -------------------------------------------------------------------------------------- graph

async function graphView(concept, params, signal) {
  const main = mount("t-graph");
  const depth = params.get("depth") || "1";
  const limit = params.get("limit") || "25";
  $("#depth", main).value = depth;
  $("#glimit", main).value = limit;
  $("#concept-form", main).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = $("#concept-q", main).value.trim();
    try {
      const found = await api("GET", `/concepts/${encodeURIComponent(q)}?limit=10`, undefined, signal);
      $("#concept-matches", main).replaceChildren(
        ...found.map((c) => el("li", {}, el("a", { href: graphHash(c.id), text: `${c.name} (${c.frequency})` }))),
      );
      if (!found.length) $("#concept-matches", main).replaceChildren(el("li", { class: "note", text: "No concept matches." }));
    } catch (e) {
      report(e);
    }
  });
  if (!concept) {
    $("#concept-q", main).focus();
    return;
  }
  const n = await api("GET", `/graph/${encodeURIComponent(concept)}?depth=${depth}&limit=${limit}`, undefined, signal);
  $("#centre-h", main).textContent = "Neighbours of " + n.center.name;
  $("#graph-caption", main).textContent =
    `${n.center.name}: ${n.nodes.length} concepts, ${n.edges.length} edges (solid: co-occurs, dashed: similar name). Click a concept to re-centre.`;
  window.CairnGraph.draw($("#graph", main), n, (id) => go(graphHash(id)));
  const names = new Map([[n.center.id, n.center.name], ...n.nodes.map((x) => [x.id, x.name])]);
  const rows = n.edges
    .filter((e) => e.source === n.center.id || e.target === n.center.id)
    .map((e) => {
      const other = e.source === n.center.id ? e.target : e.source;
      return el("tr", {}, el("td", {}, el("a", { href: graphHash(other), text: names.get(other) || other })),
        el("td", { text: e.kind }), el("td", { text: e.weight.toFixed(3) }));
    });
  $("#edges tbody", main).replaceChildren(...rows);
  const match = (await api("GET", `/concepts/${encodeURIComponent(n.center.name)}?limit=1`, undefined, signal))[0];
  const chunks = match && match.id === n.center.id ? match.chunks : [];
  $("#mentions", main).replaceChildren(...(await mentionItems(chunks, signal)));
}

/** Links to the chunks that mention a concept, labelled by their source's title. */
async function mentionItems(chunks, signal) {
  const ids = [...new Set(chunks.map(sourceOfChunk))].slice(0, 20);
  const titles = new Map(
    await Promise.all(
      ids.map((id) =>
        api("GET", "/sources/" + encodeURIComponent(id), undefined, signal)
          .then((s) => [id, s.title || s.external_id])
          .catch(() => [id, id]),
      ),
    ),
  );
  return chunks.map((c) => {
    const src = sourceOfChunk(c);
    const ordinal = Number(/-(\d+)$/.exec(c)?.[1] ?? 0);
    const label = `${titles.get(src) || src} · chunk ${ordinal + 1}`;
    return el("li", {}, el("a", { href: chunkLink(src, c), text: label }));
  });
}

/** A concept's page, keeping the graph form's depth and limit (set from the URL on render). */
function graphHash(id) {
  const p = new URLSearchParams();
  if ($("#depth").value !== "1") p.set("depth", $("#depth").value);
  if ($("#glimit").value !== "25") p.set("limit", $("#glimit").value);
  const q = p.toString();
  return "#/graph/" + encodeURIComponent(id) + (q ? "?" + q : "");
}

// --------------------------------------------------------------------------------- operations

async function opsView(signal) {
  const main = mount("t-ops");
  const [stats, health, metrics] = await Promise.all([
    api("GET", "/stats", undefined, signal),
    fetch("/health/ready", { signal }).then((r) => r.json()),
    fetch("/metrics", { signal }).then((r) => (r.ok ? r.text() : "")),
  ]);
  const facts = [
    ["sources", stats.sources], ["chunks", stats.chunks], ["keyword index", stats.chunks_keyword],
    ["embedding model", `${stats.embedding_model} (${stats.embedding_dim} dims)`],
    ["vector search", stats.ann_index?.state], ["concepts", stats.graph?.concepts],
    ["graph edges", stats.graph?.edges], ["reranker", stats.reranker || "none"],
    ["index size", `vector ${fmtBytes(stats.index_bytes.vector)}, keyword ${fmtBytes(stats.index_bytes.keyword)}`],
  ];
  $("#stats", main).replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v ?? "") })]));
  $("#health tbody", main).replaceChildren(
    ...Object.entries(health.components || {}).map(([k, c]) =>
      el("tr", {}, el("td", { text: k }), el("td", { class: "st-" + c.status, text: c.status + (c.error ? ": " + c.error : "") }),
        el("td", { text: c.latency_ms != null ? c.latency_ms.toFixed(1) + " ms" : "" }))),
  );
  const quality = metrics.split("\n").filter((l) => l.startsWith("cairn_search_quality{"));
  $("#quality", main).replaceChildren(
    ...(quality.length
      ? quality.flatMap((l) => {
          const labels = Object.fromEntries([...l.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
          return [el("dt", { text: `${labels.mode} ${labels.metric}` }), el("dd", { text: l.split(" ").pop() })];
        })
      : [el("dt", { text: "not measured" }), el("dd", { text: "set telemetry.quality_report to a `cairn eval --report` file" })]),
  );
  if (can("admin")) await keysPanel(main, signal);
}

async function keysPanel(main, signal) {
  const form = $("#key-form", main);
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const scopes = $$("input[name=scope]:checked", form).map((c) => c.value);
    try {
      const k = await api("POST", "/admin/keys", { name: form.name.value, tier: form.tier.value, scopes });
      $("#new-key", main).hidden = false;
      $("#new-key-value", main).value = k.key;
      $("#new-key-value", main).select();
      await listKeys(main, signal);
    } catch (e) {
      report(e);
    }
  };
  $("#copy-key", main).onclick = async () => {
    const v = $("#new-key-value", main);
    v.select();
    try {
      await navigator.clipboard.writeText(v.value);
      $("#copy-key", main).textContent = "Copied";
    } catch {
      $("#copy-key", main).textContent = "Press Ctrl+C";
    }
  };
  await listKeys(main, signal);
}

async function listKeys(main, signal) {
  const { keys } = await api("GET", "/admin/keys", undefined, signal);
  $("#keys tbody", main).replaceChildren(
    ...keys.map((k) =>
      el("tr", {}, el("td", { text: k.name }), el("td", { text: k.id }), el("td", { text: k.tier }),
        el("td", { text: k.scopes.join(", ") }), el("td", { text: k.last_used_at ? fmtTime(k.last_used_at * 1000) : "never" }),
        el("td", {}, el("button", {
          type: "button", class: "secondary", "aria-label": "Revoke " + k.name, text: "Revoke",
          onclick: async () => {
            if (!(await confirmDialog(`Revoke the key “${k.name}”? Clients using it get 401 at once.`))) return;
            try {
              await api("DELETE", "/admin/keys/" + encodeURIComponent(k.id));
              await listKeys(main, signal);
            } catch (e) {
              report(e);
            }
          },
        })))),
  );
}

// -------------------------------------------------------------------------------------- start

async function start() {
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("#sign-out").hidden = true;
    $("#who-name").textContent = "";
    showSignIn("Signed out.");
  });
  window.addEventListener("hashchange", render);
  try {
    await whoAmI();
  } catch (e) {
    report(e);
    return;
  }
  if (me) render();
}

start();
