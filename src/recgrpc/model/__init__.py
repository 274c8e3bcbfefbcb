"""Recommendation and churn models: features, training, evaluation, serving, re-ranking."""
