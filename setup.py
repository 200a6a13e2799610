"""The compiled parts, each beside the Python that defines what it computes (see their headers):
relay/detect/_tagscan.c, the HTML scanner's tokenizer (htmlscan.py), and relay/smtp/_octets.c,
the line facts and DATA dots of a message's bytes (octets.py). Everything else is in
pyproject.toml."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c99"]

setup(
    ext_modules=[
        Extension("relay.detect._tagscan", ["relay/detect/_tagscan.c"], extra_compile_args=FLAGS),
        Extension("relay.smtp._octets", ["relay/smtp/_octets.c"], extra_compile_args=FLAGS),
    ]
)
