"""The search: estimator allowlist, search space, pipelines, cross-validation, objective, the Optuna study
(budget, pruners, storage)."""
