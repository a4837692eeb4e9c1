"""A run's life: the ordering gate, the pump, the DAG orchestrator, the host, the relay and recovery."""
