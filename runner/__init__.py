"""flowtui's runner: pipeline loading, the engine that executes runs, and the operator API."""
