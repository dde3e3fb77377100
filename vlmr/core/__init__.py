"""The shared core: errors, atomic files, typed configs, provenance, tracking, metrics, the dataset format."""
