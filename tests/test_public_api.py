"""Every public name imports: the packages' ``__all__`` and their modules' ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import actors
import transport

PACKAGES = [actors, transport]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_name_in_the_package_all_imports(package):
    assert package.__all__, f"{package.__name__}.__all__ is empty"
    namespace: dict = {}
    exec(f"from {package.__name__} import *", namespace)
    for name in package.__all__:
        assert getattr(package, name, None) is not None, f"{package.__name__}.{name} is missing"
        assert name in namespace


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_package_all_has_no_duplicates(package):
    assert len(set(package.__all__)) == len(package.__all__)


MODULES = sorted(
    f"{package.__name__}.{info.name}"
    for package in PACKAGES
    for info in pkgutil.iter_modules(package.__path__)
    if info.name != "__main__"
)


@pytest.mark.parametrize("module_name", MODULES)
def test_every_name_in_each_module_all_imports(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is listed in __all__ but missing"


def test_the_error_tree_has_one_root():
    from actors import ActorcastError, AuthError, ConfigError, HttpError, ProtocolError

    assert all(issubclass(cls, ActorcastError) for cls in (AuthError, ConfigError, HttpError, ProtocolError))
    assert issubclass(AuthError, ProtocolError)
    assert actors.ActorcastError is transport.ActorcastError


def test_the_transport_protocol_core_imports_neither_gevent_nor_pykka():
    import subprocess
    import sys
    from pathlib import Path

    pure = ["errors", "config", "frames", "protocol", "names", "auth", "auth_request", "cors", "http_signing",
            "ops_log", "checks", "settings", "soketi"]
    code = (
        "import sys\n"
        + "".join(f"import transport.{m}\n" for m in pure)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'pykka'))\n"
        + "print(','.join(bad))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_package_is_marked_typed_and_setup_ships_the_marker(package):
    from pathlib import Path

    assert (Path(package.__path__[0]) / "py.typed").is_file()
    setup_py = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert f'"{package.__name__}": ["py.typed"]' in setup_py
