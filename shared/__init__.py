"""Code shared by the hrtrack services: models, events, parsing."""
