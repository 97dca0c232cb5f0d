"""The browser review app's logic: cases under a data root, a review session on an MRML scene
(load, run a task, correct, accept, export), and the access rules of the web server.

Imports ``slicer`` (the ``slicer-core`` wheel, through trame-slicer) but never qt: the same
``OncoSegCommonLib`` and module ``*Lib`` logic the Slicer panels use does the work. Only
``app.py`` (the page) and ``refine_clicks.py`` (the slice views' strokes) import trame.
"""
