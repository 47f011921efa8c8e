"""The HTTP edge: a Falcon ASGI app that validates batches and publishes them."""
