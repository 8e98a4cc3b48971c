"""onenet's Prefect flows. Importing them turns off Prefect's flow-run heartbeats unless the user
asked for them (core.prefect_env.without_heartbeats: each flow run otherwise ends up to 1 s late)."""

from core.prefect_env import without_heartbeats

without_heartbeats()
