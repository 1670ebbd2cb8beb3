"""The package builds without deprecation warnings: setuptools stops building a project whose
`project.license` is a TOML table after 2027-02-18 (issue 35, item 14)."""

from __future__ import annotations

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent.parent


def test_the_project_metadata_builds_without_deprecation_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any setuptools deprecation fails the test
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
    assert all((ROOT / name).is_file() for name in dist.metadata.license_files)
