"""Built-in principles, registered exactly like third-party plugins."""
