"""Named registries (networks, tasks, losses) filled by built-in modules and entry-point plugins."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from transgan.errors import TransganError

BUILTIN_ORIGIN = "transgan (built-in)"


class RegistryError(TransganError):
    """A name that is unknown, registered twice, or a plugin that failed to load."""


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, the object itself, where it came from and free-form info."""

    name: str
    obj: Callable[..., Any]
    origin: str
    info: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A name -> object table.

    Built-ins are listed as module paths and imported on first use (so `transgan --help` imports no
    network code), then plugins declared under the entry-point group are loaded. A plugin that fails
    to import is reported once and skipped: the built-ins keep working.
    """

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: list[str]):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = list(builtin_modules)
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._loading_origin = BUILTIN_ORIGIN
        self.plugin_errors: list[str] = []

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register `obj` under `name`; a name that exists raises RegistryError."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, obj, **info)
            return obj

        return decorator

    def add(self, name: str, obj: Callable[..., Any], **info: Any) -> None:
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} '{name}' from {self._loading_origin} is already registered "
                f"by {self._entries[name].origin}; choose another name"
            )
        self._entries[name] = Entry(name, obj, self._loading_origin, dict(info))

    def entry(self, name: str) -> Entry:
        self.load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"unknown {self.kind} '{name}'; known: {known}")
        return self._entries[name]

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).obj

    def names(self, **where: Any) -> list[str]:
        """Sorted names, optionally only those whose info matches every key=value given."""
        self.load()
        return sorted(
            name
            for name, entry in self._entries.items()
            if all(entry.info.get(key) == value for key, value in where.items())
        )

    def entries(self) -> list[Entry]:
        self.load()
        return [self._entries[name] for name in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries

    def load(self) -> None:
        """Import the built-in modules, then the plugins; runs once."""
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            self._load_plugin(entry_point)

    def _load_plugin(self, entry_point: importlib.metadata.EntryPoint) -> None:
        dist = entry_point.dist
        origin = f"{dist.name} {dist.version}" if dist is not None else entry_point.value
        self._loading_origin = f"plugin '{entry_point.name}' ({origin})"
        try:
            loaded = entry_point.load()
            # An entry point may name a module (importing it registers) or a function taking the registry.
            if callable(loaded) and not inspect.isclass(loaded):
                loaded(self)
        except Exception as error:  # a broken plugin must not break the built-ins
            self.plugin_errors.append(f"{self._loading_origin} failed to load: {error}")
        finally:
            self._loading_origin = BUILTIN_ORIGIN


NETWORKS = Registry(
    "network",
    "transgan.networks",
    [
        "transgan.nets.resnet",
        "transgan.nets.unet",
        "transgan.nets.patchgan",
        "transgan.nets.mobile_resnet",
        "transgan.nets.dcgan",
        "transgan.nets.conditional",
    ],
)
LOSSES = Registry("loss", "transgan.losses", ["transgan.losses"])
TASKS = Registry("task", "transgan.tasks", ["transgan.tasks.pix2pix", "transgan.tasks.cyclegan", "transgan.tasks.cgan"])


def list_models(role: str | None = None) -> list[str]:
    """Names of the registered networks, optionally only one role ('translator', 'sampler', 'discriminator')."""
    return NETWORKS.names(role=role) if role else NETWORKS.names()
