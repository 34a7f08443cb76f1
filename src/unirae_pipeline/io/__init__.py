"""Kedro datasets (the only package besides pipelines/ that imports Kedro)."""
