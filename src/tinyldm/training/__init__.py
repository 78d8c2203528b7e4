"""Fitting the two stages: trainer construction, stage 1 (with its cache), stage 2, resuming."""
