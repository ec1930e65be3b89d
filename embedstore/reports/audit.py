"""The audit's HTML page: duplicate clusters side by side, leaks as pairs, suspected mislabels with
given vs suggested label, the most isolated items, class balance; thumbnails inlined."""

from __future__ import annotations

from pathlib import Path

from .html import Section, esc, render_page, table, thumbnails, write_report

MAX_CLUSTERS = 40
MAX_ROWS = 60


def _group(items: list[dict], caption, src=None) -> str:
    """One cluster or pair: its thumbnails side by side in a framed box; boxes flow several a row."""
    return (f'<div style="display:inline-block;vertical-align:top;margin:.3rem;padding:.3rem;border:1px solid #ccc;'
            f'border-radius:4px">{thumbnails(items, caption, src)}</div>')


def audit_sections(r, src=None) -> list[Section]:
    """The page's sections; `src` (item id -> image URL) makes the page load thumbnails instead of inlining them."""
    uri = r.detail.get("uris", {})
    text = r.detail.get("texts", {})
    li = r.label_issues
    counts = [["exact duplicates", r.exact_duplicates["clusters"], r.exact_duplicates["removable"]],
              ["near-duplicates", r.near_duplicates["clusters"], r.near_duplicates["removable"]],
              ["leaks across splits", r.leaks["pairs"], r.leaks["pairs"]],
              ["label suspects", "-" if "skipped" in li else li["suspects"], "-" if "skipped" in li else li["suspects"]],
              ["most isolated items", "-", r.outliers["listed"]]]
    body = f"<p><b>{esc(r.verdict)}</b></p>"
    body += table(["finding", "clusters / pairs / items", "rows in the findings table"], counts)
    body += f"<p class='muted'>{r.items} items in {esc(r.vector_set)}. Near-duplicate rule: {esc(r.calibration['how'])}.</p>"
    if "skipped" in li:
        body += f"<p class='muted'>Label issues not checked: {esc(li['skipped'])}.</p>"
    else:
        body += f"<p class='muted'>Label issues: {esc(li['how'])}; out-of-fold accuracy {li['out_of_fold_accuracy']:.4f}.</p>"
    sections = [Section("Summary", body)]

    clusters = r.detail.get("clusters", [])
    if clusters:
        body = (f"<p>{len(clusters)} cluster(s), largest first; the first item of each (KEEP) is the one to keep: a training "
                "copy first, then the oldest file. The others show their cosine to it.</p>")
        for c in clusters[:MAX_CLUSTERS]:
            items = [{"id": m, "uri": uri.get(m, ""), "text": text.get(m)} for m in c["members"]]
            cos = c.get("cosine_to_keep", {})
            body += _group(items, lambda it, c=c, cos=cos: ("KEEP " if it["id"] == c["keep"] else
                                                          f"{cos[it['id']]:.4f} " if it["id"] in cos else "") + it["id"], src)
        if len(clusters) > MAX_CLUSTERS:
            body += f"<p class='muted'>... and {len(clusters) - MAX_CLUSTERS} more in the findings table.</p>"
        sections.append(Section("Duplicate clusters", body))
    leaks = r.detail.get("leaks", [])
    if leaks:
        body = (f"<p>{len(leaks)} pair(s): " + esc(", ".join(f"{k} {v}" for k, v in r.leaks["by_split_pair"].items())) +
                ". Excluding the later-split item (the findings table's <code>leak</code> rows) scores the test split honestly.</p>")
        for p in leaks[:MAX_ROWS]:
            items = [{"id": p["kept_side"], "uri": uri.get(p["kept_side"], ""), "split": p["kept_split"], "text": text.get(p["kept_side"])},
                     {"id": p["leaked"], "uri": uri.get(p["leaked"], ""), "split": p["leaked_split"], "text": text.get(p["leaked"])}]
            body += _group(items, lambda it: f"{it['split']}: {it['id']}", src)
        sections.append(Section("Leaks across splits", body))
    suspects = r.detail.get("suspects", [])
    if suspects:
        body = "<p>Most suspect first (lowest label quality). Caption: given label -> suggested label.</p>"
        body += thumbnails(suspects[:MAX_ROWS], lambda it: f"{it['given']} -> {it['suggested']} ({it['quality']:.2f}) {it['id']}", src)
        sections.append(Section("Suspected label errors", body))
    outliers = r.detail.get("outliers", [])
    if outliers:
        body = f"<p>{esc(r.outliers['score'])}; median item {r.outliers['median']:.4f}.</p>"
        body += thumbnails(outliers[:MAX_ROWS], lambda it: f"{it['score']:.3f} {it['label'] or '-'} {it['id']}", src)
        sections.append(Section("Most isolated items", body))
    labels = sorted({lab for c in r.balance.values() for lab in c})
    rows = [[split] + [c.get(lab, 0) for lab in labels] for split, c in r.balance.items()]
    sections.append(Section("Class balance per split", table(["split"] + labels, rows)))
    return sections


def write_audit_report(r, out_dir: str | Path) -> Path:
    """Write the audit page to `out_dir/index.html`; returns its path."""
    return write_report(out_dir, f"embedstore audit: {Path(r.store).name}", audit_sections(r))


def audit_page(r, src, top: str = "") -> str:
    """The audit as one HTML page whose thumbnails load from `src(item id)` (the server's view)."""
    return render_page(f"embedstore audit: {Path(r.store).name}", audit_sections(r, src), top)
