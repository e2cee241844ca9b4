"""Package discovery for setuptools (everything else lives in pyproject.toml).

The export stage sits in the top-level folder ``export/`` but is imported as ``mbert_edge_export``; its
subpackages are found on disk and renamed, so a new subpackage needs no edit here.
"""

from setuptools import find_packages, setup

EXPORT_DIR, EXPORT_NAME = "export", "mbert_edge_export"

runtime = find_packages(include=["mbert_edge", "mbert_edge.*"])
export = [EXPORT_NAME + name[len(EXPORT_DIR) :] for name in find_packages(include=[EXPORT_DIR, f"{EXPORT_DIR}.*"])]

setup(
    packages=runtime + export,
    package_dir={"mbert_edge": "mbert_edge", EXPORT_NAME: EXPORT_DIR},
)
