"""The CARE analysis dashboard: `care dashboard` runs ``streamlit run analysis_app/app.py``.

Each page is its own script under ``pages/`` (each also runs alone, e.g. under AppTest) and draws
the page links itself (`analysis_app.view.run_page`); this entry point only registers the pages.
The URL path of a page is its file name: Streamlit still treats a `pages/` folder next to the
entry point as old-style pages until `st.navigation` has run once, so a first request for
`/training_signal` may run that file directly; equal names make both routes the same page.
"""

from __future__ import annotations

import streamlit as st

from analysis_app.view import PAGES, PAGES_DIR

pages = [
    st.Page(PAGES_DIR / page.file, title=page.title, url_path=page.url_path, icon=page.icon)
    for page in PAGES
]
st.navigation(pages, position="hidden").run()
