"""What goes in: scenario files, traces (apslab's CSV and the Azure LLM inference format),
generated workloads, the command-line arguments that name them, and the one error type for bad
input. Imports only :mod:`apslab.core`.
"""
