"""What the tests build on: tiny models saved as the official releases save them, fixtures for
each family and VQ, reference decoders that recompute without a cache, and workflow helpers."""
