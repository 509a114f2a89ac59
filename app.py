"""glandseg dashboard: the router only (``streamlit run app.py``). Pages live in ``pages/``, cached loaders in
``ui_cache.py``."""

import streamlit as st


def run() -> None:
    st.set_page_config(page_title="glandseg: gland segmentation on H&E", page_icon="🔬", layout="wide")
    pages = [
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:", default=True),
        st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:"),
        st.Page("pages/drilldown.py", title="Image drill-down", icon=":material/zoom_in:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/annotate.py", title="Annotate", icon=":material/draw:"),
    ]
    st.navigation(pages).run()


run()
