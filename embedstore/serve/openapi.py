"""The API's OpenAPI 3.1 description, served at /openapi.json (written by hand: the routes are few
and Starlette does not derive one)."""

from __future__ import annotations

from .api import FALSE_WORDS, MAX_K, TRUE_WORDS

ERROR = {"description": "a JSON error with a one-line reason",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
IMAGE_BODY = {"required": True, "description": "the image file itself (not a form)",
              "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
UPLOAD_BODY = {"required": True, "description": "the image file itself (not a form); for a text store, the text",
                "content": {**IMAGE_BODY["content"], "text/plain": {"schema": {"type": "string"}}}}
K = {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
     "description": f"number of items to answer with (at most {MAX_K}, and no more than there are to give back unless clip_k=1)"}
BOOL = {"type": "string", "enum": [*TRUE_WORDS, *FALSE_WORDS], "default": "0"}
CLIP_K = {"name": "clip_k", "in": "query", "schema": BOOL,
          "description": "1: when fewer items than k can come back (the filter leaves fewer, or the query's own items are "
                         "left out), answer with all there are and say so in `note`, instead of a 400 (the page asks so)"}
WHERE = {"name": "where", "in": "query", "schema": {"type": "string"}, "example": "label=cat|dog,split=test",
         "description": "filter on label and split, as `embed search --where`"}
NOTE = "with clip_k=1, when fewer items than k could come back: how many there were"
ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "an item id (its path relative to the source folder; may contain '/')"}


def _json(ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict:
    return {str(c): ERROR for c in codes}


def schema(api=None) -> dict:
    upload_errors = _errors(400, 408, 411, 413, 415)
    return {
        "openapi": "3.1.0",
        "info": {"title": "embedstore serve", "version": "1",
                 "description": "Nearest-neighbour search, thumbnails and head predictions over one embedstore store. "
                                "Off loopback every request needs the access token (Authorization: Bearer TOKEN)."},
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"],
                          "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "Hit": {"type": "object", "properties": {"rank": {"type": "integer"}, "id": {"type": "string"},
                                                         "label": {"type": "string"}, "split": {"type": "string"},
                                                         "score": {"type": "number"}, "text": {"type": "string"}}},
                "Hits": {"type": "object", "properties": {"hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                                                          "exact": {"type": "boolean"}, "ms": {"type": "number"},
                                                          "vector_set": {"type": "string"}, "k": {"type": "integer"},
                                                          "note": {"type": "string", "description": NOTE}}},
                "Recommendations": {"type": "object", "properties": {
                    "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}, "exact": {"type": "boolean"},
                    "ms": {"type": "number"}, "profiles": {"type": "integer"}, "liked": {"type": "array", "items": {"type": "string"}},
                    "disliked": {"type": "array", "items": {"type": "string"}}, "ignored": {"type": "array", "items": {"type": "string"}},
                    "diversity": {"type": "number"}, "k": {"type": "integer"}, "note": {"type": "string", "description": NOTE}}},
                "Prediction": {"type": "object", "properties": {"label": {"type": "string"}, "prob": {"type": "number"},
                                                                "probs": {"type": "object", "additionalProperties": {"type": "number"},
                                                                          "description": "class -> probability, as `embed predict --json`"},
                                                                "ranked": {"type": "array", "description": "the same, highest first",
                                                                           "items": {"type": "object", "properties": {
                                                                               "label": {"type": "string"}, "prob": {"type": "number"}}}},
                                                                "seen_in_training": {"type": "boolean", "description": "the upload's content is an item the head was fitted or selected on: its probability is not a test figure"}}},
                "Item": {"type": "object", "properties": {"id": {"type": "string"}, "label": {"type": "string"},
                                                          "split": {"type": "string"}, "file": {"type": "string"},
                                                          "thumb": {"type": ["string", "null"]}}},
                "Info": {"type": "object"},
                "Map": {"type": "object", "properties": {
                    "points": {"type": "array", "items": {"type": "object"}}, "explained": {"type": "array", "items": {"type": "number"}},
                    "sampled": {"type": "boolean"}, "items": {"type": "integer"}}},
            },
        },
        "security": [{"token": []}, {}],
        "paths": {
            "/api/info": {"get": {"summary": "the store, vector set, encoder, labels, splits, head and index",
                                  "responses": {"200": _json("Info", "what is served")}}},
            "/api/search": {
                "get": {"summary": "neighbours of a stored item (id) or of a text (CLIP and text stores)",
                        "parameters": [{"name": "id", "in": "query", "schema": {"type": "string"}},
                                       {"name": "text", "in": "query", "schema": {"type": "string"}}, K, WHERE, CLIP_K,
                                       {"name": "include_self", "in": "query", "schema": BOOL,
                                        "description": "1 (or true, yes, on): an id query's own item may come back (as embed search --include-self)"}],
                        "responses": {"200": _json("Hits", "the k nearest items"), **_errors(400, 404)}},
                "post": {"summary": "neighbours of an uploaded image, embedded as the store's files were (a text store: "
                                    "the text itself, text/plain)",
                         "parameters": [K, WHERE, CLIP_K], "requestBody": UPLOAD_BODY,
                         "responses": {"200": _json("Hits", "the k nearest items"), **upload_errors}}},
            "/api/recommend": {
                "get": {"summary": "more like these: items to recommend from liked (and disliked) items, as `embed recommend --like`; "
                                   "the given items never come back",
                        "parameters": [{"name": "like", "in": "query", "required": True, "schema": {"type": "string"},
                                        "description": "liked item ids, comma-separated"},
                                       {"name": "dislike", "in": "query", "schema": {"type": "string"},
                                        "description": "disliked item ids, comma-separated (pushed away from)"}, K, WHERE, CLIP_K,
                                       {"name": "diversity", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
                                        "description": "MMR re-ranking: 0 relevance only, 1 novelty only"},
                                       {"name": "clusters", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 20, "default": 0},
                                        "description": "taste profiles: 0 automatic, 1 one mean, n clusters of the liked items"}],
                        "responses": {"200": _json("Recommendations", "the k items to recommend"), **_errors(400, 404)}}},
            "/api/predict": {"post": {"summary": "the loaded head's label and class probabilities for an uploaded image "
                                                 "(a text store: the text itself, text/plain, UTF-8 unless its charset says otherwise)",
                                      "requestBody": UPLOAD_BODY,
                                      "responses": {"200": _json("Prediction", "label and probabilities"),
                                                    **_errors(404), **upload_errors}}},
            "/api/items/{item_id}": {"get": {"summary": "one item's label, split and file name", "parameters": [ITEM_ID],
                                             "responses": {"200": _json("Item", "the item"), **_errors(404)}}},
            "/api/thumb/{item_id}": {"get": {"summary": "a PNG thumbnail of one item",
                                             "parameters": [ITEM_ID, {"name": "size", "in": "query",
                                                                      "schema": {"type": "integer", "minimum": 16, "maximum": 512, "default": 128}}],
                                             "responses": {"200": {"description": "PNG", "content": {"image/png": {}}}, **_errors(404, 413)}}},
            "/api/anomalies": {"get": {"summary": "the --anomalies detector's ranking, most unusual first (top 5000)",
                                       "parameters": [{"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
                                                      {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50, "maximum": 500}}],
                                       "responses": {"200": {"description": "method, fit_on, threshold, flagged, evaluation, "
                                                                            "warnings (as `embed anomalies` prints them: what makes "
                                                                            "the flags less trustworthy), notes, items",
                                                             "content": {"application/json": {}}}, **_errors(400, 404)}}},
            "/api/audit": {"get": {"summary": "embed audit of the served set (run on first request): duplicates, leaks across "
                                          "splits, label issues, outliers, balance; the page is at /audit",
                                   "responses": {"200": {"description": "as `embed audit --json`, plus clusters, leak_pairs, "
                                                                        "suspects and outliers by item id",
                                                         "content": {"application/json": {}}}, **_errors(400)}}},
            "/audit": {"get": {"summary": "the audit as a web page with thumbnails",
                               "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}, **_errors(400)}}},
            "/api/map": {"get": {"summary": "a 2-D PCA map of the store (up to 5000 items, sampled evenly)",
                                 "responses": {"200": _json("Map", "points with id, label, split, x, y")}}},
        },
    }
