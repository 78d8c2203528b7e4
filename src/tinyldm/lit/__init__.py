"""LightningModules: how each stage trains, validates and checkpoints."""
