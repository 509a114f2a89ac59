"""glandseg dashboard: the router only (``streamlit run app.py``). Pages live in ``pages/``, their helpers in ``ui/``.

With ``GLANDSEG_READONLY=1`` the Train page (training and Promote) is left out of the navigation.
"""

import streamlit as st

from glandseg_dashboard.settings import read_only


def run() -> None:
    st.set_page_config(page_title="glandseg: gland segmentation on H&E", page_icon="🔬", layout="wide")
    pages = [
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:", default=True),
        st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:"),
        st.Page("pages/drilldown.py", title="Image drill-down", icon=":material/zoom_in:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/annotate.py", title="Annotate", icon=":material/draw:"),
    ]
    if read_only():
        pages = [p for p in pages if p.title != "Train"]
    st.navigation(pages).run()


run()
