"""`embed serve`: an HTTP API and one web page over a store (stdlib http.server, loopback by default)."""
