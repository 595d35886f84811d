"""HTTP service over the inference engines (`transgan serve`): dynamic batching, limits, a demo page."""
