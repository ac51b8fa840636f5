"""Classical image retrieval baselines (SIFT, HOG, rotation-searched power spectrum), all behind
one interface: ``fit(gallery_images)`` then ``query(image, k)`` -> (gallery indices, distances),
best first. The CNN retriever (issue 5) implements the same interface."""

from surrogate.baseline.retrievers import HOGRetriever, PowerSpectrumRetriever, Retriever, SIFTRetriever, make_retriever

__all__ = ["Retriever", "SIFTRetriever", "HOGRetriever", "PowerSpectrumRetriever", "make_retriever"]
