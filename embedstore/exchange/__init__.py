"""Vectors in and out of a store in the layout embedding-reader and autofaiss read:
`emb/*.npy` shards with `metadata/*.parquet` in the same order (or `emb/*.parquet` with an
`embedding` column)."""
