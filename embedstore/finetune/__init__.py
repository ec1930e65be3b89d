"""Fine-tuning an encoder on a store's labelled items: data, the training loop, checkpoints."""
