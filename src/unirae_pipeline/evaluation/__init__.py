"""Feature extractors, reference statistics and Fréchet distances."""
