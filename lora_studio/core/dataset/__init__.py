"""Dataset layer: scan folders, captions, validation, buckets."""
