"""Build backend: setuptools, found where Python already has it.

``pip install ./python`` must work offline. pip builds in an isolated
environment and would download the ``requires`` of pyproject.toml from PyPI;
so ``requires`` is empty, and this backend uses the setuptools of the Python
installation (Debian: python3-setuptools), which pip's isolation hides from
sys.path, by putting the installation's site directories back at the end.
"""

import site
import sys

try:
    import setuptools  # noqa: F401  (present without build isolation)
except ImportError:
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    for extra in ("/usr/lib/python3/dist-packages",):
        dirs.append(extra)
    for d in dirs:
        if d not in sys.path:
            sys.path.append(d)
    try:
        import setuptools  # noqa: F401
    except ImportError:
        raise ImportError("building fedgrid needs setuptools (Debian: apt-get install python3-setuptools)")

from setuptools.build_meta import *  # noqa: E402,F401,F403


# setuptools asks pip to install "wheel" for a wheel build; python3-pip
# depends on python3-wheel, so it is already there (on the restored path).
def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []
