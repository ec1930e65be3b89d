"""Recommendations from embeddings: taste profiles of liked items searched through the store's
index ("more like these"), per-user lists from an interactions file, an honest evaluation against
popularity and item-kNN baselines, and cross-domain recommendations between sets of one encoder."""

import sys

from .. import CallablePackage

sys.modules[__name__].__class__ = CallablePackage  # `embedstore.recommend(...)` calls recommend.query.recommend


def _call_target():
    from .query import recommend

    return recommend


from .batch import UsersReport, recommend_users
from .engine import Answer, Ask, Recommender
from .evaluate import EvalReport, evaluate_recommenders
from .profile import build_profiles, mmr
from .query import RecommendReport, recommend, recommend_in

__all__ = ["Answer", "Ask", "EvalReport", "RecommendReport", "Recommender", "UsersReport", "build_profiles",
           "evaluate_recommenders", "mmr", "recommend", "recommend_in", "recommend_users"]
