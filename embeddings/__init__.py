"""Features to a PCA + FAISS index: recall@k, out-of-class scores, projector export."""
__all__: list[str] = []
