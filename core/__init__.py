"""The floor every layer stands on: the workspace, files and atomic writes, errors, vectors,
photo decoding, fault injection for the crash tests, and Prefect's offline settings. It imports
no other onenet package."""
