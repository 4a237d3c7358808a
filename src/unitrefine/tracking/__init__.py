"""MLflow: runs, nested trials, artifacts and the Model Registry."""
