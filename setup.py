"""actorcast: a Pusher Channels server written as an actor system on Pykka and gevent."""

import re

from setuptools import find_packages, setup

# The version lives in actors/__init__.py; read, not imported (gevent may not be installed yet).
with open("actors/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="actorcast",
    version=VERSION,
    description="A realtime WebSocket server speaking the Pusher Channels protocol, built on Pykka and gevent",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["actors", "actors.*", "transport", "transport.*"]),
    package_data={"actors": ["py.typed"], "transport": ["py.typed"]},  # PEP 561: the packages are typed
    install_requires=[
        "pykka>=4.1,<5",
        "gevent>=23.9",
        "ujson>=5.8",
        "prometheus-client>=0.17",
        "redis>=5,<6",  # the Redis adapter (actors/redis_bus.py)
        # Redis's own C protocol parser (redis-py's recommended extra): fed bytes, so the node's hub
        # reads the bus itself, with no thread hand-over per message (actors/redis_link.py).
        "hiredis>=3,<4",
    ],
    extras_require={
        # playwright drives Debian's chromium in tests/examples (never `playwright install`);
        # trustme: the TLS tests make their own CA and certificates (tests/tls_certs.py).
        "test": ["pytest>=8", "websocket-client>=1.6", "pusher>=3.3", "ruff>=0.6", "mypy>=1.10", "playwright>=1.40",
                 "trustme>=1.1"],
    },
    entry_points={"console_scripts": ["actorcast=actors.cli:main"]},
)
