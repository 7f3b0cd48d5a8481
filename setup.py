"""Only the package list lives here; everything else is in pyproject.toml.

resources/ sits at the top of the repository and ships as lora_studio.resources (package-dir in
pyproject.toml). packages.find cannot discover a mapped package, so it is named explicitly.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["lora_studio", "lora_studio.*"]), "lora_studio.resources"])
