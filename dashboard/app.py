"""Runs the packaged dashboard (``ecom_stream/dashboard/app.py``) from a checkout.

``streamlit run dashboard/app.py`` works wherever ``ecom_stream`` is importable
(``pip install -e .`` or ``PYTHONPATH=.``). ``ecom-stream dashboard`` runs the packaged file
itself, so an installed wheel does not need this folder.
"""

from ecom_stream.dashboard.app import main

main()
