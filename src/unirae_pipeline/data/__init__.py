"""Pure torch/PIL data: the built-in shapes set, ImageFolder indexing, latent shards and statistics."""
