"""The pure core of the engine: history events, the replay executor, the workflow context and
tasks, the registry, the payload codec, retry policies, instance ids, statuses and errors.

Nothing here does I/O or imports ``nats`` or ``brokers``: it runs the same in a worker, in a
unit test and on a laptop without a server. Users import these names from ``engine``.
"""
