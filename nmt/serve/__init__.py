"""`nmt serve`: a trained model behind an HTTP API, with a page to try it (the serve extra)."""
