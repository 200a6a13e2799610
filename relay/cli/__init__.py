"""The ``relay`` command: ``main`` parses and dispatches, one module per verb."""
