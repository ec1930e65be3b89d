"""HTML reports for recommendations: each user's liked thumbnails next to the recommended ones,
and the evaluation's table of methods. Built from `reports.html` (one page, images inlined)."""

from __future__ import annotations


from ..reports.html import Section, esc, table, thumbnails


def _user_block(user: str, liked: list[dict], hits: list[dict], note: str = "") -> str:
    return (f"<h3>{esc(user)}{(' <span class=muted>' + esc(note) + '</span>') if note else ''}</h3>"
            "<div style='display:flex;gap:1.5rem;align-items:flex-start'>"
            f"<div><p class=muted>liked ({len(liked)})</p>{thumbnails(liked, lambda it: it.get('caption', it['id']))}</div>"
            f"<div><p class=muted>recommended ({len(hits)})</p>{thumbnails(hits, lambda it: it['caption'])}</div></div>")


def _liked(ids: list[str], uris: list[str], limit: int = 12) -> list[dict]:
    return [{"id": i, "uri": u, "caption": i} for i, u in list(zip(ids, uris))[:limit]]


def users_section(kept: list[dict]) -> Section:
    body = ""
    for u in kept:
        hits = [{**h, "caption": f"#{h['rank']} {h['label'] or '-'} {h['score']:.3g}"} for h in u["hits"]]
        note = "no usable interactions: most interacted items" if u["source"] == "popular" else ""
        body += _user_block(u["user"], _liked(u["liked"], u["liked_uris"]), hits, note)
    return Section("Recommendations per user", body or "<p>No users.</p>")


def single_section(r) -> Section:
    liked = [{"id": h, "uri": u, "caption": h} for h, u in zip(r.liked, r.liked_uris)]
    hits = [{**h, "caption": f"#{h['rank']} {h['label'] or '-'} {h['score']:.3f}"} for h in r.hits]
    return Section("More like these", _user_block("liked" + (f" in {r.liked_from}" if r.liked_from else ""), liked, hits))


def evaluation_sections(e, examples: list[dict]) -> list[Section]:
    from .evaluate import METHODS, fmt_metric

    rows = []
    for view in ("all", "cold_start"):
        for m in METHODS:
            x = e.methods[m][view]
            rows.append([f"{m} ({'all users' if view == 'all' else 'cold-start items'})", x.get("users", 0),
                         fmt_metric(x, "hit_rate"), fmt_metric(x, "ndcg"), fmt_metric(x, "coverage")])
    body = table(["method", "users", f"hit-rate@{e.k} (95% CI)", f"nDCG@{e.k} (95% CI)", "coverage (items)"], rows)
    body += "<ul>" + "".join(
        f"<li>{esc(c['view'])}: content {c['hit_rate_a']:.3f} vs {esc(c['b'])} {c['hit_rate_b']:.3f} on {c['users']} users, "
        f"McNemar p = {c['p_value']:.3g}: {esc(c['winner'] + ' wins' if c['winner'] else 'no significant difference')}</li>"
        for c in e.comparisons) + "</ul>"
    p = e.protocol
    body += (f"<p class=muted>{esc(p['split'])}; {p['users_scored']} of {p['users_in_file']} users scored "
             f"({p['cold_start_users']} with a cold-start held-out item); catalogue {p['catalogue']} items; {esc(p['interval'])}.</p>")
    body += "".join(f"<p class=muted>{esc(n)}</p>" for n in e.notes)
    ex = ""
    for x in examples:
        hits = [{**h, "caption": f"#{h['rank']} {h['label'] or '-'}" + (" HELD OUT" if h["held_out"] else "")} for h in x["hits"]]
        ex += _user_block(x["user"], _liked(x["liked"], x["liked_uris"]), hits,
                          f"held out: {x['held_out']}" + (" (cold-start item)" if x["cold"] else ""))
        ex += thumbnails([{"id": x["held_out"], "uri": x["held_out_uri"]}], lambda it: "held out: " + it["id"])
    return [Section(f"Evaluation at k = {e.k}", body), Section("Content recommendations for scored users", ex or "<p>None.</p>")]
