"""Parley's completion core: the g4f client API over documented provider APIs.

Code written for g4f runs with only its import changed:
`from core import Client, AsyncClient, ChatCompletion, models, Provider, get_providers, errors`.
"""

from . import errors, models
from .client import AsyncClient, Client
from .legacy import ChatCompletion
from .providers import Provider, get_providers

__all__ = [
    "AsyncClient",
    "ChatCompletion",
    "Client",
    "Provider",
    "errors",
    "get_providers",
    "models",
]
