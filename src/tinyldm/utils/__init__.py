"""Small helpers shared across stages: images, run files, config checks."""
