"""Worker internals: leases and the write path, task execution, the poll loop."""
