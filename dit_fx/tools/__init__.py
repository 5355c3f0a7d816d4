"""Tools around the engine: dumps, reports, the supported-models matrix, the demo."""
