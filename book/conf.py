"""Sphinx configuration of the course website (`make book`; book/build.py stages the sources).

The notebooks are rendered from their stored outputs and never executed (nb_execution_mode "off").
Everything the pages load is served from the site itself: no web fonts, no CDN scripts (the theme
bundles its icons; no page has maths, widgets or Thebe, which would pull scripts from a CDN).

Launch buttons (Binder, from environment.yml) need the GitHub repository, given by book/build.py
as DPTLEARN_BOOK_REPO=owner/name (in GitHub Actions: the repository being built); without one
the notebook pages have no launch button, since no Binder link could work.
"""
from __future__ import annotations

import os

project = "dptlearn"
author = "dptlearn contributors"
copyright = "dptlearn contributors"
html_title = "dptlearn: from ViT tokens to dense 3D"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# Notebooks: the stored outputs as they are (nbval checks them in `make test`), never executed.
nb_execution_mode = "off"
nb_merge_streams = True
myst_heading_anchors = 4            # docs link to "#section-name" anchors
myst_enable_extensions = ["colon_fence", "deflist"]
suppress_warnings = ["myst.header"]  # notebooks start a cell at "###" after a "#" title, on purpose

html_theme = "sphinx_book_theme"
html_last_updated_fmt = None
html_copy_source = True             # the "download .ipynb" button serves _sources/
html_show_sourcelink = False

REPO = os.environ.get("DPTLEARN_BOOK_REPO", "").strip().strip("/")
BRANCH = os.environ.get("DPTLEARN_BOOK_BRANCH", "main").strip() or "main"

# unset, the theme logs "Got invalid theme mode" to the console on a first visit
html_context = {"default_mode": "auto"}
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
if REPO:
    html_theme_options |= {
        "repository_url": f"https://github.com/{REPO}",
        "repository_branch": BRANCH,
        "path_to_docs": "",         # book/build.py stages every page at its path in the repository
        "use_repository_button": True,
        "launch_buttons": {"binderhub_url": "https://mybinder.org", "notebook_interface": "jupyterlab"},
    }
