"""`embed recommend`: "more like these" from liked items, per-user lists from an interactions
file, and an evaluation against popularity and item-kNN baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import check_output_folders, emit_json, fail, one_line, quiet_option, run_guarded, say

EPILOG = (
    "Examples:\n\n"
    "  embed recommend photos.h5 --like cat/c1.jpg,cat/c7.jpg --dislike dog/d2.jpg -k 10\n\n"
    "  embed recommend photos.h5 --like shoes/s1.jpg --diversity 0.3 --where label=bag --json\n\n"
    "  embed recommend photos.h5 --interactions likes.csv --out recs.parquet --report recs-report/\n\n"
    "  embed recommend photos.h5 --evaluate likes.csv -k 10 --report eval-report/\n\n"
    "  embed recommend bags.h5 --like-store shoes.h5 --like shoes/s1.jpg      # cross-domain, same encoder\n\n"
    "Interactions: a CSV or Parquet with columns user,item[,rating,timestamp]; every item a user "
    "interacted with is left out of their list. --evaluate holds out each user's last liked item "
    "(by timestamp; at random, seeded, without one) and scores content, most-popular and item-kNN on it."
)


def _say_hits(hits: list) -> None:
    say(f"  {'rank':>4}  {'score':>8}  label  id")
    for h in hits:
        say(f"  {h['rank']:4d}  {h['score']:8.4f}  {one_line(h['label'] or '-')}  {one_line(h['id'])}")


def register(app: typer.Typer) -> None:
    @app.command(epilog=EPILOG)
    def recommend(
        store: Path = typer.Argument(..., metavar="STORE", help="The store to recommend from (built by `embed build`)."),
        like: list[str] = typer.Option(None, "--like", metavar="ID[,ID...]", help="Liked item ids, comma-separated or repeated (a comma within an id written \\,)."),
        dislike: list[str] = typer.Option(None, "--dislike", metavar="ID[,ID...]", help="Disliked item ids: pushed away from, never returned."),
        interactions: Path = typer.Option(None, "--interactions", help="A CSV/Parquet of user,item[,rating,timestamp]: top k per user to --out."),
        out: Path = typer.Option(None, "--out", help="With --interactions: a .csv or .parquet of (user, rank, id, score, label, source)."),
        evaluate: Path = typer.Option(None, "--evaluate", help="A CSV/Parquet of interactions to hold out from and score against the baselines."),
        k: int = typer.Option(10, "-k", help="How many items to recommend (per user)."),
        where: str = typer.Option(None, "--where", help="Only recommend items matching key=value[,key=value] (label, split, id, uri or a metadata column such as brand=acme); '|' for OR."),
        diversity: float = typer.Option(0.0, "--diversity", help="MMR re-ranking: 0 relevance only ... 1 novelty only; 0.3 is a mild mix."),
        clusters: int = typer.Option(None, "--clusters", help="Taste profiles: 1 = one mean; N = N clusters of the liked items; 0 or left out: split only when the likes form clear groups."),
        dislike_weight: float = typer.Option(0.5, "--dislike-weight", help="How much of the disliked items' mean is subtracted from the profile."),
        min_rating: float = typer.Option(None, "--min-rating", help="Interactions rated below this are dislikes (needs a rating column)."),
        like_store: Path = typer.Option(None, "--like-store", help="Cross-domain: the liked ids are items of this store (same encoder, checked)."),
        like_set: str = typer.Option(None, "--like-set", help="Cross-domain: the liked ids are items of this vector set."),
        vector_set: str = typer.Option(None, "--set", help="Vector set name or encoder id, when the store has several."),
        exact: bool = typer.Option(False, "--exact", help="Brute force, even when the set has an approximate index."),
        report: Path = typer.Option(None, "--report", help="Write an HTML report (liked thumbnails next to the recommended ones) into this folder."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random holdout (--evaluate without timestamps) and of the clustering."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        quiet: bool = quiet_option(),
    ) -> None:
        """Recommendations from embeddings: a profile of liked items searched through the store's index."""
        modes = [m for m, v in (("--like", like), ("--interactions", interactions), ("--evaluate", evaluate)) if v]
        if len(modes) != 1:
            fail("give one of --like ID[,ID...], --interactions FILE --out FILE or --evaluate FILE"
                 + (f" (got {' and '.join(modes)})" if modes else ""))
        if (interactions is None) != (out is None):
            fail("--interactions and --out go together: --interactions likes.csv --out recs.parquet")
        if dislike and not like:
            fail("--dislike needs --like (interactions files carry dislikes as ratings below --min-rating)")
        check_output_folders(("--report", report, "the HTML report"))
        opts = dict(k=k, where=where, diversity=diversity, clusters=clusters, dislike_weight=dislike_weight, exact=exact,
                    vector_set=vector_set, seed=seed)
        if like:
            from embedstore.recommend import recommend as run

            r = run_guarded(run, store, like, dislike, like_store=like_store, like_set=like_set, **opts)
            if report is not None:
                from embedstore.recommend.report import single_section
                from embedstore.reports.html import write_report

                run_guarded(write_report, report, f"Recommendations from {store.name}", [single_section(r)])
            if json_out:
                emit_json(r.to_dict())
                return
            say(f"{len(r.hits)} recommended from {r.vector_set} for {len(r.liked)} liked"
                + (f" and {len(r.disliked)} disliked" if r.disliked else "") + " item(s)"
                + (f" of {r.liked_from}" if r.liked_from else "") + f"; {r.profiles} taste profile(s)"
                + (f", diversity {r.diversity:g}" if r.diversity else "") + (f", where {r.where}" if r.where else "")
                + f"; {r.plan.get('method', '')}, {r.ms:.1f} ms")
            for n in r.notes:
                say(f"  note: {n}")
            if r.dropped:
                say(f"  ignored (both liked and disliked): {', '.join(r.dropped)}")
            _say_hits(r.hits)
            if report is not None:
                say(f"report: {report / 'index.html'}")
            return
        if like_store is not None or like_set is not None:
            if evaluate is not None:
                fail("--evaluate scores one store against its own interactions; drop --like-store / --like-set")
        if interactions is not None:
            from embedstore.recommend import recommend_users

            b, kept = run_guarded(recommend_users, store, interactions, out, min_rating=min_rating, like_store=like_store,
                                  like_set=like_set, progress=not (json_out or quiet), keep=20 if report else 0, **opts)
            if report is not None:
                from embedstore.recommend.report import users_section
                from embedstore.reports.html import write_report

                run_guarded(write_report, report, f"Recommendations from {store.name}", [users_section(kept)])
            if json_out:
                emit_json(b.to_dict())
                return
            say(f"{b.users} users of {interactions}: {b.rows_written} rows to {b.out} ({b.seconds:.1f} s, "
                f"{b.users / max(b.seconds, 1e-9):.0f} users/s); {b.from_profile} from their own likes, {b.from_popular} most-popular"
                + (f", {b.short} with fewer than {b.k}" if b.short else ""))
            for n in b.notes:
                say(f"  note: {n}")
            if report is not None:
                say(f"report: {report / 'index.html'}")
            return
        from embedstore.recommend import evaluate_recommenders
        from embedstore.recommend.evaluate import METHODS, fmt_metric

        e, examples = run_guarded(evaluate_recommenders, store, evaluate, min_rating=min_rating, progress=not (json_out or quiet),
                                  keep=12 if report else 0, **opts)
        if report is not None:
            from embedstore.recommend.report import evaluation_sections
            from embedstore.reports.html import write_report

            run_guarded(write_report, report, f"Recommendation evaluation: {store.name}", evaluation_sections(e, examples))
        if json_out:
            emit_json(e.to_dict())
            return
        p = e.protocol
        say(f"{p['users_scored']} of {p['users_in_file']} users scored ({p['split']}); catalogue {p['catalogue']} items; "
            f"{p['cold_start_users']} held-out items had no training interactions (cold start)")
        for view, title in (("all", "all users"), ("cold_start", "cold-start items")):
            say(f"  {title}:  {'method':<9} {'hit-rate@' + str(e.k) + ' (95% CI)':<24} {'nDCG@' + str(e.k) + ' (95% CI)':<24} coverage")
            for m in METHODS:
                x = e.methods[m][view]
                say(f"  {'':<{len(title) + 1}} {m:<9} {fmt_metric(x, 'hit_rate'):<24} {fmt_metric(x, 'ndcg'):<24} {fmt_metric(x, 'coverage')}")
        for c in e.comparisons:
            verdict = f"{c['winner']} wins" if c["winner"] else "no significant difference"
            say(f"  {c['view']}: content vs {c['b']}: {c['hit_rate_a']:.3f} vs {c['hit_rate_b']:.3f}, McNemar p = {c['p_value']:.3g}: {verdict}")
        for n in e.notes:
            say(f"  note: {n}")
        if report is not None:
            say(f"report: {report / 'index.html'}")
