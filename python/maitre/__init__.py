"""maitre: a fast WSGI server (placeholder)."""
