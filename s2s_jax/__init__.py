"""s2s_jax: recurrent encoder-decoder models with attention in JAX/Flax."""
