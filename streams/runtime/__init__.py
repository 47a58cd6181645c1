"""How topologies run: compiled batch processors, tasks, the commit cycle and the worker."""
