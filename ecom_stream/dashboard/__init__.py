"""The Streamlit dashboard, shipped in the package: ``app.py`` (the page Streamlit runs, layout),
``data.py`` (version-keyed caches) and ``figures.py`` (Plotly); served by ``ecom-stream dashboard``.
"""
