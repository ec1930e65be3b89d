"""The one web page (self-contained: no external scripts, styles or fonts).

Search by uploaded image (with the head's prediction and its class probabilities, in the server's
order), by text (CLIP and text stores; on a text store the head answers for the text too) or by id;
filter by label and split; a 2-D map of the store (PCA) where hovering a point shows its thumbnail
and clicking it opens the item and its neighbours; "more like these": tick "like" on any cards and
get recommendations from their taste profile (/api/recommend). Searches ask with clip_k=1: when
fewer items than k can come back, the page shows those there are and the server's note saying so."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embedstore</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{--fg:#1d232b;--mut:#5d6875;--bd:#d8dde3;--bg:#f5f7f9;--acc:#2563eb}
*{box-sizing:border-box} body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);background:#fff}
header{padding:.7rem 1.2rem;border-bottom:1px solid var(--bd);display:flex;gap:1rem;align-items:baseline}
header h1{font-size:1.15rem;margin:0} #info{color:var(--mut);font-size:.9rem}
main{display:grid;grid-template-columns:minmax(340px,1fr) minmax(360px,1.1fr);gap:1rem;padding:1rem 1.2rem}
section{border:1px solid var(--bd);border-radius:8px;padding:.8rem;background:#fff}
h2{font-size:.95rem;margin:.1rem 0 .6rem} label{font-size:.85rem;color:var(--mut)}
.row{display:flex;gap:.5rem;align-items:center;margin:.35rem 0;flex-wrap:wrap}
input[type=text]{flex:1;min-width:10rem;padding:.35rem .45rem;border:1px solid var(--bd);border-radius:5px}
select,input[type=number]{padding:.3rem;border:1px solid var(--bd);border-radius:5px}
button{padding:.35rem .8rem;border:0;border-radius:5px;background:var(--acc);color:#fff;cursor:pointer}
button:disabled{background:#9aa7b8;cursor:default}
#status{color:var(--mut);font-size:.85rem;min-height:1.2em} #error{color:#b42318;font-size:.9rem;min-height:1.2em}
.note{color:#92400e;font-size:.85rem} .note:empty{display:none} #anom-warnings div{color:#92400e;font-size:.82rem;margin:.2rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(104px,1fr));gap:.5rem;margin-top:.5rem}
.card{font-size:.72rem;text-align:center;word-break:break-all;cursor:pointer;border:1px solid transparent;border-radius:6px;padding:2px}
.card:hover{border-color:var(--acc)} .card.flagged{border-color:#dc2626}
.card img{width:96px;height:96px;object-fit:contain;background:var(--bg);border-radius:4px}
.card .txt{width:96px;height:96px;overflow:hidden;text-align:left;background:var(--bg);padding:3px;margin:auto}
.card .meta{font-size:11px;color:var(--mut);white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:128px;margin:auto}
.bar{display:flex;align-items:center;gap:.4rem;font-size:.8rem;margin:.15rem 0}
.bar span:first-child{width:7rem;text-align:right;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar .b{height:.7rem;background:var(--acc);border-radius:3px} #prediction h3{font-size:.85rem;margin:.3rem 0}
#map{width:100%;height:420px;background:var(--bg);border-radius:6px;display:block}
#map circle{cursor:pointer;stroke:#fff;stroke-width:.6} #map circle:hover{stroke:#000;stroke-width:1.5}
#map circle.dim{opacity:.15}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid var(--bd);border-radius:6px;padding:4px;font-size:.75rem;display:none;box-shadow:0 2px 8px rgba(0,0,0,.15)}
#tip img{width:112px;height:112px;object-fit:contain;display:block}
#legend{font-size:.78rem;color:var(--mut);display:flex;flex-wrap:wrap;gap:.6rem;margin-top:.3rem}
#legend i{display:inline-block;width:.7rem;height:.7rem;border-radius:50%;margin-right:.25rem;vertical-align:-1px}
.card .pick{display:block;font-size:.7rem;color:var(--mut);cursor:pointer} .card.liked{border-color:#16a34a;background:#f0fdf4}
#liked-note{font-size:.8rem;color:var(--mut)}
#item{display:none;margin-top:.6rem;border-top:1px solid var(--bd);padding-top:.6rem}
#item .head{display:flex;gap:.8rem;align-items:flex-start} #item .head img{width:128px;height:128px;object-fit:contain;background:var(--bg)}
</style></head>
<body>
<header><h1>embedstore</h1><div id="info">loading...</div><a id="audit-link" href="/audit" title="duplicates, leaks across splits, label issues, outliers (embed audit)">audit this store</a></header>
<main>
<div>
<section>
<h2>Search</h2>
<form id="upload" class="row"><label for="file">Image</label><input type="file" id="file" accept="image/*">
 <button type="submit" id="go-image">Search</button></form>
<form id="textform" class="row"><label for="text">Text</label><input type="text" id="text" placeholder="a photo of a dog">
 <button type="submit" id="go-text">Search</button></form>
<form id="idform" class="row"><label for="itemid">Item id</label><input type="text" id="itemid" placeholder="cat/cat_000.jpg">
 <button type="submit" id="go-id">Search</button></form>
<div class="row"><label for="f-label">Label</label><select id="f-label"><option value="">any</option></select>
 <label for="f-split">Split</label><select id="f-split"><option value="">any</option></select>
 <label for="k">k</label><input type="number" id="k" value="12" min="1" max="1000" style="width:4.5rem">
 <span id="f-more" style="display:none;align-items:center;gap:.4rem"><label for="f-where">where</label><input type="text" id="f-where" placeholder="brand=acme"></span></div>
<div class="row"><button type="button" id="more-like" disabled>More like these</button>
 <label for="diversity">diversity</label><input type="number" id="diversity" value="0" min="0" max="1" step="0.1" style="width:4.5rem">
 <span id="liked-note">tick "like" on results to build a taste profile</span>
 <button type="button" id="clear-liked" style="display:none">clear</button></div>
<div id="status"></div><div id="note" class="note"></div><div id="error"></div>
<div id="prediction"></div>
<div class="grid" id="results"></div>
</section>
<section id="anomalies" style="display:none;margin-top:1rem">
<h2>Most unusual <span id="anomnote" style="font-weight:normal;color:var(--mut)"></span></h2>
<div id="anom-warnings"></div>
<div class="grid" id="anomaly-list"></div>
<div class="row"><button type="button" id="anom-more">more</button></div>
</section>
</div>
<div>
<section>
<h2>Map of the store <span id="mapnote" style="font-weight:normal;color:var(--mut)"></span></h2>
<svg id="map" viewBox="0 0 600 420" preserveAspectRatio="xMidYMid meet" role="img" aria-label="2-D map of the store"></svg>
<div id="legend"></div>
<div id="item"><div class="head"><img id="item-img" alt=""><div id="item-meta"></div></div>
<h3 style="font-size:.85rem;margin:.6rem 0 .2rem">Neighbours</h3><div id="neighbours-note" class="note"></div><div class="grid" id="neighbours"></div></div>
</section>
</div>
</main>
<div id="tip"><img alt=""><div></div></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const COLOURS = ["#2563eb","#dc2626","#16a34a","#9333ea","#ea580c","#0891b2","#ca8a04","#db2777","#4b5563","#65a30d"];
let INFO = null, COLOUR = {};
const thumb = (id, size) => "/api/thumb/" + id.split("/").map(encodeURIComponent).join("/") + "?size=" + (size || 128);
// a value as --where reads it: a backslash before , | and itself (store/select.parse_filter)
const plain = (v) => v.replace(/[\\\\,|]/g, (c) => "\\\\" + c);
function where() {
  const parts = [];
  if ($("f-label").value) parts.push("label=" + plain($("f-label").value));
  if ($("f-split").value) parts.push("split=" + plain($("f-split").value));
  if ($("f-where").value.trim()) parts.push($("f-where").value.trim());  // metadata columns, as --where takes them
  return parts.join(",");
}
// k as typed (the server says what is wrong with 0 or 1.5); clip_k=1: when the filter (or leaving the
// query's own items out) leaves fewer than k, the server answers with those there are and a note saying so
function params(extra) {
  const p = new URLSearchParams(extra || {}); p.set("k", $("k").value.trim() || "12"); p.set("clip_k", "1");
  if (where()) p.set("where", where()); return p.toString();
}
function say(status, err, note) { $("status").textContent = status || ""; $("error").textContent = err || ""; $("note").textContent = note || ""; }
function cards(target, hits) {
  target.innerHTML = "";
  for (const h of hits) {
    const card = document.createElement("div"); card.className = "card result"; card.dataset.id = h.id;
    if (h.text) { const t = document.createElement("div"); t.className = "txt"; t.textContent = h.text.slice(0, 200); card.appendChild(t); }
    else { const img = document.createElement("img"); img.alt = h.id; img.loading = "lazy"; img.src = thumb(h.id, 128); card.appendChild(img); }
    const cap = document.createElement("div");
    cap.textContent = "#" + h.rank + " " + (h.label || "-") + " \u00b7 " + h.score.toFixed(3); cap.title = h.id;
    card.appendChild(cap);
    if (h.meta) { const m = document.createElement("div"); m.className = "meta";  // a manifest's other columns
      m.textContent = Object.entries(h.meta).map(([k, v]) => k + "=" + v).join(" \u00b7 "); m.title = m.textContent; card.appendChild(m); }
    card.appendChild(likeBox(h.id, card)); card.onclick = () => openItem(h.id); target.appendChild(card);
  }
}
// ---- more like these: liked items -> /api/recommend ----
const LIKED = new Set();
function likeBox(id, card) {
  const lab = document.createElement("label"); lab.className = "pick";
  const box = document.createElement("input"); box.type = "checkbox"; box.className = "like"; box.checked = LIKED.has(id);
  card.classList.toggle("liked", box.checked);
  lab.onclick = (e) => e.stopPropagation();
  box.onchange = () => { if (box.checked) LIKED.add(id); else LIKED.delete(id); card.classList.toggle("liked", box.checked); likedChanged(); };
  lab.append(box, " like"); return lab;
}
function likedChanged() {
  $("more-like").disabled = LIKED.size === 0; $("clear-liked").style.display = LIKED.size ? "" : "none";
  $("more-like").textContent = "More like these" + (LIKED.size ? " (" + LIKED.size + ")" : "");
  $("liked-note").textContent = LIKED.size ? LIKED.size + " liked: " + [...LIKED].slice(0, 3).join(", ") + (LIKED.size > 3 ? " ..." : "")
                                           : 'tick "like" on results to build a taste profile';
}
async function moreLikeThese() {
  if (!LIKED.size) return;
  $("prediction").innerHTML = "";
  say("recommending..."); show(await fetch("/api/recommend?" + params({like: [...LIKED].join(","), diversity: $("diversity").value || "0"})), "recommended");
}
$("more-like").onclick = () => { LAST = moreLikeThese; moreLikeThese(); };
$("clear-liked").onclick = () => { LIKED.clear(); for (const b of document.querySelectorAll("input.like")) { b.checked = false; b.closest(".card").classList.remove("liked"); } likedChanged(); };
async function show(resp, what) {
  let data; try { data = await resp.json(); } catch (e) { data = {error: "HTTP " + resp.status}; }
  if (!resp.ok) { $("results").innerHTML = ""; say("", data.error || ("error " + resp.status)); return; }
  say(data.hits.length + " " + (what || "neighbours") + " in " + data.ms.toFixed(1) + " ms" + (where() ? " (filter " + where() + ")" : "") +
      (data.exact ? ", exact" : ", approximate index"), "", data.note);
  cards($("results"), data.hits); highlight(data.hits.map(h => h.id));
}
function showPrediction(resp, d) {
  const box = $("prediction"); box.innerHTML = "";
  if (!resp.ok) { box.textContent = d.error; return; }
  const h = document.createElement("h3"); h.textContent = "head predicts: " + d.label + " (" + d.prob.toFixed(3) + ")" + (d.seen_in_training ? ": the head was fitted on this very file" : ""); box.appendChild(h);
  // the server's order, highest first (Object.entries would put integer-like labels, digits, first)
  const ranked = d.ranked ? d.ranked.map(r => [r.label, r.prob]) : Object.entries(d.probs).sort((a, b) => b[1] - a[1]);
  for (const [c, p] of ranked.slice(0, 8)) {
    const row = document.createElement("div"); row.className = "bar prob";
    const a = document.createElement("span"); a.textContent = c; const b = document.createElement("span"); b.className = "b";
    b.style.width = Math.max(2, Math.round(p * 160)) + "px"; const v = document.createElement("span"); v.textContent = p.toFixed(3);
    row.append(a, b, v); box.appendChild(row);
  }
  if (ranked.length > 8) { const m = document.createElement("div"); m.className = "bar more";
    m.textContent = "and " + (ranked.length - 8) + " more classes, each at most " + ranked[8][1].toFixed(3); box.appendChild(m); }
}
async function predictText(text) {  // a text store's head answers for the searched text, as for an upload
  if (!(INFO && INFO.head && INFO.modality === "text")) return;
  const p = await fetch("/api/predict", {method: "POST", body: text, headers: {"Content-Type": "text/plain; charset=utf-8"}});
  showPrediction(p, await p.json());
}
async function searchId(id) { $("prediction").innerHTML = ""; say("searching..."); show(await fetch("/api/search?" + params({id: id}))); }
$("idform").onsubmit = (e) => { e.preventDefault(); searchId($("itemid").value.trim()); };
$("textform").onsubmit = async (e) => { e.preventDefault(); $("prediction").innerHTML = ""; say("searching...");
  const text = $("text").value;
  show(await fetch("/api/search?" + params({text: text}))); predictText(text); };
async function searchUpload() {
  const f = $("file").files[0];
  if (!f) { say("", "choose an image first"); return; }
  if (INFO && f.size > INFO.max_upload) { say("", "the file is " + f.size + " bytes; this server accepts at most " + INFO.max_upload); return; }
  say("embedding and searching...");
  const headers = {"Content-Type": f.type || "application/octet-stream"};
  show(await fetch("/api/search?" + params(), {method: "POST", body: f, headers}));
  if (INFO && INFO.head) { const p = await fetch("/api/predict", {method: "POST", body: f, headers}); showPrediction(p, await p.json()); }
}
$("upload").onsubmit = (e) => { e.preventDefault(); searchUpload(); };
for (const s of ["f-label", "f-split", "f-where"]) $(s).onchange = () => { applyFilterToMap(); rerun(); };
let LAST = null;
function rerun() { if (LAST) LAST(); }
for (const [form, fn] of [["upload", searchUpload], ["idform", () => searchId($("itemid").value.trim())],
                          ["textform", () => $("textform").onsubmit(new Event("submit"))]])
  $(form).addEventListener("submit", () => { LAST = fn; });
async function openItem(id) {
  const r = await fetch("/api/items/" + id.split("/").map(encodeURIComponent).join("/")); const it = await r.json();
  if (!r.ok) { say("", it.error); return; }
  $("item").style.display = "block"; $("item-img").src = thumb(id, 256); $("item-img").alt = id;
  const m = $("item-meta"); m.innerHTML = "";
  for (const [k, v] of [["id", it.id], ["label", it.label || "-"], ["split", it.split || "-"], ["file", it.file]]) {
    const d = document.createElement("div"); const b = document.createElement("b"); b.textContent = k + ": "; d.append(b, v); m.appendChild(d);
  }
  $("itemid").value = id;
  const n = await fetch("/api/search?" + params({id: id})); const d = await n.json();
  $("neighbours-note").textContent = n.ok ? (d.note || "") : "";
  if (n.ok) { cards($("neighbours"), d.hits); highlight(d.hits.map(h => h.id)); } else $("neighbours").textContent = d.error;
  markSelected(id);
}
// ---- the anomaly ranking ----
let ANOM_OFFSET = 0;
async function moreAnomalies() {
  const r = await fetch("/api/anomalies?limit=24&offset=" + ANOM_OFFSET); const d = await r.json();
  if (!r.ok) { $("anomnote").textContent = d.error; return; }
  $("anomnote").textContent = "(" + d.method + ", " + d.flagged + " of " + d.scored_count + " flagged above the threshold)";
  if (ANOM_OFFSET === 0) $("anom-warnings").innerHTML = "";  // the first page sets them (an empty ranking stays at 0)
  if (ANOM_OFFSET === 0) for (const w of d.warnings || []) {  // as `embed anomalies` prints them
    const div = document.createElement("div"); div.className = "warning"; div.textContent = "warning: " + w; $("anom-warnings").appendChild(div); }
  for (const a of d.items) {
    const card = document.createElement("div"); card.className = "card anomaly" + (a.flagged ? " flagged" : ""); card.dataset.id = a.id;
    const img = document.createElement("img"); img.alt = a.id; img.loading = "lazy"; img.src = thumb(a.id, 128); card.appendChild(img);
    const cap = document.createElement("div"); cap.title = a.id;
    cap.textContent = "#" + a.rank + " " + (a.label || "-") + " \u00b7 " + (a.flagged ? "flagged" : "p" + Math.round(a.percentile || 0));
    card.appendChild(cap); card.onclick = () => openItem(a.id); $("anomaly-list").appendChild(card);
  }
  ANOM_OFFSET += d.items.length;
  $("anom-more").disabled = d.items.length < 24;
}
$("anom-more").onclick = moreAnomalies;
// ---- the map ----
function highlight(ids) {
  const set = new Set(ids);
  for (const c of document.querySelectorAll("#map circle")) c.setAttribute("r", set.has(c.dataset.id) ? 6 : 3.5);
}
function markSelected(id) {
  for (const c of document.querySelectorAll("#map circle.sel")) c.classList.remove("sel"), c.removeAttribute("stroke");
  const c = document.querySelector('#map circle[data-id="' + CSS.escape(id) + '"]');
  if (c) { c.classList.add("sel"); c.setAttribute("r", 8); c.parentNode.appendChild(c); }
}
function applyFilterToMap() {
  const l = $("f-label").value, s = $("f-split").value;
  for (const c of document.querySelectorAll("#map circle"))
    c.classList.toggle("dim", (l && c.dataset.label !== l) || (s && c.dataset.split !== s));
}
async function drawMap() {
  $("mapnote").textContent = "(computing...)";
  const r = await fetch("/api/map"); const m = await r.json();
  if (!r.ok) { $("mapnote").textContent = m.error; return; }
  const svg = $("map"), W = 600, H = 420, pad = 18, NS = "http://www.w3.org/2000/svg";
  const xs = m.points.map(p => p.x), ys = m.points.map(p => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + (W - 2 * pad) * (x - x0) / ((x1 - x0) || 1), sy = (y) => H - pad - (H - 2 * pad) * (y - y0) / ((y1 - y0) || 1);
  const tip = $("tip");
  for (const p of m.points) {
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", sx(p.x).toFixed(1)); c.setAttribute("cy", sy(p.y).toFixed(1)); c.setAttribute("r", 3.5);
    c.setAttribute("fill", COLOUR[p.label] || "#6b7280"); c.dataset.id = p.id; c.dataset.label = p.label; c.dataset.split = p.split;
    c.onmouseenter = (e) => { tip.style.display = "block"; tip.querySelector("img").src = thumb(p.id, 128);
      tip.querySelector("div").textContent = p.id + " \u00b7 " + (p.label || "-"); };
    c.onmousemove = (e) => { tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px"; };
    c.onmouseleave = () => { tip.style.display = "none"; };
    c.onclick = () => openItem(p.id);
    svg.appendChild(c);
  }
  $("mapnote").textContent = "PCA, " + (100 * (m.explained[0] + m.explained[1])).toFixed(0) + "% of variance" +
    (m.sampled ? "; " + m.points.length + " of " + m.items + " items" : "");
  applyFilterToMap();
}
fetch("/api/info").then(r => r.json()).then(d => {
  INFO = d;
  if (d.max_k) $("k").max = d.max_k;
  $("info").textContent = d.vectors + " items \u00b7 " + d.vector_set + " (" + d.encoder + ")" + (d.head ? " \u00b7 head: " + d.head : "");
  Object.keys(d.labels).forEach((l, i) => { COLOUR[l] = COLOURS[i % COLOURS.length];
    const o = document.createElement("option"); o.value = o.textContent = l; $("f-label").appendChild(o);
    const g = document.createElement("span"); const dot = document.createElement("i"); dot.style.background = COLOUR[l]; g.append(dot, l + " (" + d.labels[l] + ")"); $("legend").appendChild(g); });
  for (const s of Object.keys(d.splits)) { const o = document.createElement("option"); o.value = o.textContent = s; $("f-split").appendChild(o); }
  if (d.metadata_columns && d.metadata_columns.length) { $("f-more").style.display = "inline-flex";
    $("f-where").placeholder = d.metadata_columns.slice(0, 3).map(c => c + "=...").join(","); $("f-where").title = "metadata columns: " + d.metadata_columns.join(", "); }
  if (!d.text_search) { $("text").disabled = true; $("go-text").disabled = true; $("text").placeholder = "text search needs a CLIP or text store"; }
  if (!d.image_search) { $("file").disabled = true; $("go-image").disabled = true; }
  if (d.anomalies) { $("anomalies").style.display = "block"; moreAnomalies(); }
  drawMap();
});
</script>
</body></html>
"""
