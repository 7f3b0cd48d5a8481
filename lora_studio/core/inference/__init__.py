"""Preview engine: adapters, weights, merge, fuse."""
