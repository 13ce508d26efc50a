"""Where batch files come from, for the daemon to merge.

``landing`` is the landing folder watched on disk (the only source today). Further sources go
here beside it, each behind the same small interface the daemon consumes (``start``, ``stop``,
``take_ready``, ``wait``, ``pending_count``): a REST API puller is planned.
"""
