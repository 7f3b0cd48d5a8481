"""Base models: detect, load, bundled configs, demo models."""
