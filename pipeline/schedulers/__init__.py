"""What a scheduler says about this process and its jobs: task identity and the queue's liveness answer."""
