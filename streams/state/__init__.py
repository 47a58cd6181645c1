"""State: per-task RocksDB stores, table views, changelog recovery."""
