"""Long-running and operator commands: the watcher daemon, status, maintenance."""
