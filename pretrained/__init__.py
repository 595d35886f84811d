"""Index of pretrained models (installed as the package `transgan.pretrained`): index.json + small weights."""
