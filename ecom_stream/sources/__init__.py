"""Where batch files come from, for the daemon to merge.

``landing`` is the landing folder watched on disk (the only source today). Further sources go
here beside it, each behind the same small interface the daemon consumes (``start``, ``stop``,
``take_ready``, ``wait``, ``pending_count``). A REST API (``rest``: the contract and one page
with retries; ``pager``: an endpoint's pages and cursor; ``reconcile``: reported against
landed and merged) is not a daemon source: ``ecom-stream pull`` lands its pages as files.
"""
