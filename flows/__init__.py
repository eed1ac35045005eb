"""Prefect flows and deployments chaining the tasks in tasks/ (the pipeline issue)."""
