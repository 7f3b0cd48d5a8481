"""Training engine: train(config, emit, stop) -> result."""
