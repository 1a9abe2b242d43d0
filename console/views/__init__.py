"""The console's pages, one module per area; each module lists its own URLs."""
