"""The one web page: search by uploaded image, by text (CLIP stores) or by id; neighbours as thumbnails."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>embedstore</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1000px;padding:0 1rem;color:#222}
form{margin:.5rem 0} .grid{display:flex;flex-wrap:wrap;gap:.6rem;margin-top:1rem}
.card{width:140px;font-size:.75rem;text-align:center;word-break:break-all;cursor:pointer}
.card img{width:128px;height:128px;object-fit:contain;background:#f6f6f6;border:1px solid #ddd}
.card .txt{width:128px;height:128px;overflow:hidden;text-align:left;background:#f6f6f6;border:1px solid #ddd;padding:2px}
#status{color:#555;margin:.5rem 0} #error{color:#b00}
</style></head>
<body>
<h1>embedstore</h1>
<div id="info"></div>
<form id="upload"><label>Search by image: <input type="file" id="file" accept="image/*"></label>
 <button type="submit" id="go-image">Search</button></form>
<form id="textform"><label>Search by text: <input type="text" id="text" size="40" placeholder="a photo of a dog"></label>
 <button type="submit" id="go-text">Search</button></form>
<form id="idform"><label>Search by id: <input type="text" id="itemid" size="40"></label>
 <button type="submit" id="go-id">Search</button> <label>k <input type="number" id="k" value="12" min="1" max="100"></label></form>
<div id="status"></div><div id="error"></div><div id="prediction"></div>
<div class="grid" id="results"></div>
<script>
const $ = (id) => document.getElementById(id);
function k() { return Math.max(1, parseInt($("k").value || "12")); }
async function show(resp) {
  const data = await resp.json();
  $("results").innerHTML = "";
  if (!resp.ok) { $("error").textContent = data.error || ("error " + resp.status); $("status").textContent = ""; return; }
  $("error").textContent = "";
  $("status").textContent = data.hits.length + " neighbours in " + data.ms.toFixed(1) + " ms";
  for (const h of data.hits) {
    const card = document.createElement("div"); card.className = "card result";
    card.innerHTML = h.text ? '<div class="txt"></div><div></div>' : '<img alt=""><div></div>';
    if (h.text) card.querySelector(".txt").textContent = h.text.slice(0, 200);
    else card.querySelector("img").src = "/api/thumb/" + encodeURIComponent(h.id);
    card.lastElementChild.textContent = "#" + h.rank + " " + (h.label || "-") + " " + h.score.toFixed(3) + " " + h.id;
    card.onclick = () => { $("itemid").value = h.id; searchId(); };
    $("results").appendChild(card);
  }
}
async function searchId() { $("status").textContent = "searching..."; show(await fetch("/api/search?k=" + k() + "&id=" + encodeURIComponent($("itemid").value))); }
$("idform").onsubmit = (e) => { e.preventDefault(); searchId(); };
$("textform").onsubmit = async (e) => { e.preventDefault(); $("status").textContent = "searching...";
  show(await fetch("/api/search?k=" + k() + "&text=" + encodeURIComponent($("text").value))); };
$("upload").onsubmit = async (e) => { e.preventDefault(); const f = $("file").files[0];
  if (!f) { $("error").textContent = "choose an image first"; return; }
  $("status").textContent = "embedding and searching...";
  show(await fetch("/api/search?k=" + k(), {method: "POST", body: f, headers: {"Content-Type": f.type || "application/octet-stream"}}));
  const info = await (await fetch("/api/info")).json();
  if (info.head) { const p = await fetch("/api/predict", {method: "POST", body: f, headers: {"Content-Type": f.type || "application/octet-stream"}});
    const d = await p.json(); $("prediction").textContent = p.ok ? ("head predicts: " + d.label + " (" + d.prob.toFixed(3) + ")") : d.error; }
};
fetch("/api/info").then(r => r.json()).then(d => {
  $("info").textContent = d.items + " items in " + d.vector_set + " (" + d.encoder + ")" + (d.head ? ", head: " + d.head : "");
  if (!d.text_search) { $("text").disabled = true; $("text").placeholder = "text search needs a CLIP store"; }
});
</script>
</body></html>
"""
