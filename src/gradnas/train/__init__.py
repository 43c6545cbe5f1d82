"""Training a found architecture from scratch: settings, the genotype's source, and the training loop."""
