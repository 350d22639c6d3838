"""Scoring any policy with ``act(obs, action_mask)``: rollouts to the root, metrics, figures,
the report and evaluation-only baselines. Imports nothing from ``agents``."""
