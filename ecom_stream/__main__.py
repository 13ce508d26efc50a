from ecom_stream.cli import run

run()
