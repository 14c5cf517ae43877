"""Training engine: ray selection per cell, ray reconstruction from chunks, the training loop."""
