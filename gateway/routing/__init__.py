"""Which provider serves a request: resolution of model names and the filters that may refuse it."""
