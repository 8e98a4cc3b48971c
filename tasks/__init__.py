"""The pipeline's stages as Prefect tasks. Importing them sends onenet's progress lines to the
task runs' logs in any process that runs them, a Dask worker's included (core.prefect_env)."""

from core.prefect_env import onenet_logs_to_runs

onenet_logs_to_runs()
