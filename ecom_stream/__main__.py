import os

# Arrow's default (mimalloc) pool holds on to freed micro-batch memory; the system allocator,
# trimmed between micro-batches, gives it back. Must be set before pyarrow is imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from ecom_stream.cli.main import run

run()
