"""Builds apslab's optional compiled kernels; all other metadata is in pyproject.toml.

The extensions are optional: without a C compiler the build skips them and apslab uses its pure
Python paths (same results, slower). See apslab/core/_bucket_walk.c and apslab/sim/_eventloop.c.
"""

from setuptools import Extension, setup

# Plain IEEE-754 doubles: the results must be bit-identical to the Python paths.
STRICT_FLOATS = ["-O2", "-fno-fast-math", "-ffp-contract=off"]
# The token-bucket step both kernels include (listed so a change rebuilds them and sdists ship it).
BUCKET_STEP = ["apslab/core/_bucket_step.h"]

setup(
    ext_modules=[
        Extension("apslab.core._bucket_walk", ["apslab/core/_bucket_walk.c"], optional=True,
                  extra_compile_args=STRICT_FLOATS, depends=BUCKET_STEP),
        Extension("apslab.sim._eventloop", ["apslab/sim/_eventloop.c"], optional=True,
                  extra_compile_args=STRICT_FLOATS, depends=BUCKET_STEP),
    ]
)
