"""The bundled demo: an httpbin-like upstream and the example configuration for `make run`."""
