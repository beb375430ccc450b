"""One module per dataset or family, each declaring its spec (spec.Dataset); s2s_jax/data/registry.py lists them."""
