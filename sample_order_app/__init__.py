"""The order-processing saga, run as message-driven services on jetloom.

Each service is its own process (``python -m sample_order_app.<service>``) and talks to the
others only over NATS. ``python -m sample_order_app demo`` runs them all and places a batch of
orders that covers every outcome. ``jetloom dev sample_order_app/dev.py`` hosts them all in
one worker instead (``dev.py``). See README.md.
"""
