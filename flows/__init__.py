"""onenet's Prefect flows. Importing them turns off Prefect's flow-run heartbeats unless the user
asked for them (core.prefect_env.without_heartbeats: each flow run otherwise ends up to 1 s late),
and sends onenet's progress lines to the runs' logs in any process (core.prefect_env.onenet_logs_to_runs)."""

from core.prefect_env import onenet_logs_to_runs, without_heartbeats

without_heartbeats()
onenet_logs_to_runs()
