"""Corpus, embeddings, index and search, with citations."""
