"""The shared vocabulary of selftaught: records, errors, the answer-format contract,
atomic file writes, secret scrubbing and the leakage rule.

Every other package may import ``core``; ``core`` imports nothing else from the
project, so it sits at the bottom of the dependency graph.
"""
