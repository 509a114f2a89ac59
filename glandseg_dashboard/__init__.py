"""The Streamlit side of glandseg: everything the pages in ``pages/`` call besides ``glandseg_core``.

- ``settings``: folders, deployment switches (read-only, data paths), the two model roles, the mtime helper.
- ``safepaths``: checks every typed name or folder before anything is read or written.
- ``loaders``: cached image / label-map / GlaS loaders and the Streamlit router fix.
- ``pickers``: the image and ground-truth choosers shared by Compare and Annotate.
- ``budget`` and ``inference``: the pixel budget, and segmentation in a child process (``worker``) that the
  user can cancel and that ends with the browser session.
- ``results``, ``figures``, ``drilldown``: precomputed results, plotly figures and drill-down tables.
- ``forms``, ``jobs``, ``runs``, ``promote``: the Train page's form, background jobs, run status and promotion.

Nothing in ``glandseg_core`` imports ``ui``; this package imports ``glandseg_core`` and ``streamlit``.
"""
