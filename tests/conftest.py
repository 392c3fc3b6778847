import os

# Tests never reach for the network: the vendored digits are the fixture.
os.environ.setdefault("PIPELINE_OFFLINE", "1")
os.environ.setdefault("PIPELINE_DATA_ROOT", "/nonexistent-pipeline-data-root")
