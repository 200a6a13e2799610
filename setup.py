"""The one compiled part: relay/detect/_tagscan.c, the HTML scanner's tag finder (see its
header and relay/detect/htmlscan.py). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "relay.detect._tagscan",
            ["relay/detect/_tagscan.c"],
            extra_compile_args=["-O2", "-std=c99"],
        )
    ]
)
