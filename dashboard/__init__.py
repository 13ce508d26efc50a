"""The Streamlit dashboard (``app.py``) and its helpers; run with ``ecom-stream dashboard``."""
