"""The search: estimator allowlist, search space, pipelines, cross-validation, objective, Optuna study and its storage."""
