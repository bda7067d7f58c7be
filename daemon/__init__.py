"""The composition root: config, logging, spool, receivers, runners, CLI, supervisor.

The only package that imports the others; it maps between their types.
"""
