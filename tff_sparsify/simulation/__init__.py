"""Running a federated simulation: data and partitions, the round loop, execution contexts and workers."""
