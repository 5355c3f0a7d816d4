"""Frontend: what TorchDynamo hands the backend (``dynamo.py``: static inputs, input sources, graph
breaks) and tracing each block class once (``block_tracing.py``)."""
