"""Prefect flows and deployments chaining the tasks in tasks/.

    flows/pipeline.py   the flow `pgrpo-pipeline` (python -m flows.pipeline)
    flows/serve.py      its deployments, served for the UI (python -m flows.serve)
    scripts/ui.sh       Prefect server + MLflow UI + deployments together (start | stop)
"""
