"""Pipelines that read or write the database around a model: train, top-N, churn, import, demo.

Dependency direction: ``server`` -> ``jobs`` -> ``model`` (pure ML) and ``db`` (storage).
"""
