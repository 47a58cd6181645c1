"""Operating on a topology's tables from outside a worker: list, read and reset them."""
