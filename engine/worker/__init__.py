"""The worker: ``WorkflowRuntime`` and the two pipelines it runs (workflow tasks and activity
attempts) on JetStream through ``brokers``. Users import its names from ``engine``."""
