"""What the Prefect flows in flows/ call: git and DVC operations, the workspace lock, and the
train-job handoff through git and the DVC remote. Flows only orchestrate; the logic is here."""
