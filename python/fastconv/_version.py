# The one place the version is written: the build reads it into the package
# metadata (pyproject.toml, tool.scikit-build.metadata.version), and
# fastconv.__version__ comes from that metadata.
__version__ = "0.1.0"
