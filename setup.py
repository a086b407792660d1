"""Builds apslab's optional compiled event loop; all other metadata is in pyproject.toml.

The extension is optional: without a C compiler the build skips it and apslab uses its pure
Python loop (same results, slower). See apslab/_eventloop.c.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "apslab._eventloop",
            ["apslab/_eventloop.c"],
            optional=True,
            # Plain IEEE-754 doubles: the results must be bit-identical to the Python loop.
            extra_compile_args=["-O2", "-fno-fast-math", "-ffp-contract=off"],
        )
    ]
)
