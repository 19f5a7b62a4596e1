"""Composition: configuration, task suites, the LangGraph loop, runs and cycles."""
