"""The sdist holds what building, testing and reading fastconv need, and
nothing built or generated: python .ci/check_sdist.py dist/fastconv-X.tar.gz"""

import sys
import tarfile

NEEDED = [
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "pyproject.toml",
    "CMakeLists.txt",
    "csrc/bindings.cpp",
    "python/fastconv/__init__.py",
    "python/fastconv/_version.py",
    "tests/conftest.py",
    "docs/conf.py",
    "examples/train_digits.py",
]
UNWANTED_DIRS = ("build/", "dist/", ".venv/", ".ci/", ".nox/", "docs/_build/", "docs/auto_examples/", "docs/generated/")

with tarfile.open(sys.argv[1]) as sdist:
    names = {name.partition("/")[2] for name in sdist.getnames()}  # without the fastconv-X/ prefix
missing = [name for name in NEEDED if name not in names]
unwanted = sorted(name for name in names if name.startswith(UNWANTED_DIRS) or name.endswith((".so", ".o")))
if missing or unwanted:
    sys.exit(f"sdist {sys.argv[1]}: missing {missing}, unwanted {unwanted}")
print(f"sdist: {len(names)} entries, nothing missing, nothing unwanted")
