"""The model to export once the search is over: best trial or ensemble, threshold, the estimate for new recordings,
review ranking."""
