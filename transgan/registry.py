"""Named registries (networks, tasks, losses) filled by built-in modules and entry-point plugins."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import threading
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from transgan.errors import TransganError


class RegistryError(TransganError):
    """A name that is unknown, registered twice, or a plugin that failed to load."""


class PluginWarning(UserWarning):
    """A plugin failed to load and was skipped; the built-ins (and other plugins) keep working."""


@dataclass(frozen=True)
class Origin:
    """Where a registered name comes from: a distribution and, for a plugin, the entry point that loaded it."""

    package: str
    version: str
    plugin: str | None = None  # the entry point's name; None for built-ins
    target: str | None = None  # the entry point's value (module or module:function)

    @property
    def is_plugin(self) -> bool:
        """True for a name registered by an entry-point plugin, False for a built-in."""
        return self.plugin is not None

    def __str__(self) -> str:
        if self.plugin is None:
            return f"{self.package} {self.version} (built-in)"
        return f"plugin '{self.plugin}' ({self.target}) of package {self.package} {self.version}"


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, the object itself, where it came from and free-form info."""

    name: str
    obj: Callable[..., Any]
    origin: Origin
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: which one, from which package, and why."""

    kind: str
    group: str
    origin: Origin
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.origin} failed to load: {self.reason}; it was skipped and the built-ins still work "
            f"(fix or uninstall {self.origin.package})"
        )


@dataclass
class _PluginLoad:
    origin: Origin
    added: list[tuple[Registry, str]] = field(default_factory=list)


# Loading is rare and short; one lock for all registries keeps a plugin that registers into several of
# them (each may trigger the other's loading) free of lock-order deadlocks.
_LOCK = threading.RLock()
_LOADING: list[_PluginLoad] = []  # the plugins being imported right now (nested when one triggers another)
_builtins_imported = False


def builtin_origin() -> Origin:
    """The origin of transgan's own names: this package and its version."""
    from transgan import __version__  # at call time: transgan/__init__ imports this module

    return Origin("transgan", __version__)


def _import_all_builtins() -> None:
    # Every registry's built-ins go in before any plugin: a plugin that imports, say, transgan.losses must
    # not make the built-in losses register under the plugin's name.
    global _builtins_imported
    if _builtins_imported:
        return
    _builtins_imported = True
    for registry in REGISTRIES.values():
        for module in registry.builtin_modules:
            importlib.import_module(module)


def _distribution_of(entry_point: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is not None:
        return dist.name, dist.version
    # An entry point made by hand (not read from installed metadata): name its top-level module instead.
    return entry_point.value.split(":")[0].split(".")[0], "(version unknown)"


class Registry:
    """A name -> object table.

    Built-ins are listed as module paths and imported on first use (so `transgan --help` imports no
    network code), then the plugins declared under the entry-point group. A plugin that fails to import,
    or registers a name that exists, is skipped whole (with a PluginWarning naming it and its package):
    the built-ins keep working.
    """

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: list[str]):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtin_modules = list(builtin_modules)
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self.plugin_errors: list[PluginFailure] = []

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register `obj` under `name`; a name that exists raises RegistryError.

        `info` is free-form and kept on the entry. Networks give role= ('translator', 'sampler' or
        'discriminator'), optionally family= and test_config= (small options for the tests that build every
        registered network; without it they shrink the usual width and size options).
        """

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, obj, **info)
            return obj

        return decorator

    def add(self, name: str, obj: Callable[..., Any], **info: Any) -> None:
        """Register `obj` under `name` (with free-form info such as role=); a name that exists raises."""
        with _LOCK:
            loading = _LOADING[-1] if _LOADING else None
            if loading is not None and not self._loaded:
                # A plugin registering into a registry not yet loaded: load it first, so the name is checked
                # against the built-ins and other plugins rather than slipping in ahead of them.
                self.load()
            origin = loading.origin if loading is not None else builtin_origin()
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered by {self._entries[name].origin}; choose another name"
                )
            self._entries[name] = Entry(name, obj, origin, dict(info))
            if loading is not None:
                loading.added.append((self, name))

    def add_variant(self, name: str, base: str, doc: str, /, **fixed: Any) -> None:
        """Register `name` as the builder registered as `base` with the options `fixed` set (timm's variants).

        The variant's options are the base's minus the fixed ones, so a model file of the variant stores
        only those; its info is the base's, with the fixed options taken out of `test_config`.
        """
        with _LOCK:
            if _LOADING and not self._loaded:
                self.load()  # a plugin's variant of a built-in: the built-ins go in first (see add)
            if base not in self._entries:
                raise RegistryError(f"{self.kind} variant '{name}': no {self.kind} '{base}' is registered before it")
            parent = self._entries[base]
            info = dict(parent.info)
            if "test_config" in info:
                info["test_config"] = {key: value for key, value in info["test_config"].items() if key not in fixed}
            self.add(name, _fixing(parent.obj, name, doc, fixed, f"{self.kind} variant '{name}' of '{base}'"), **info)

    def entry(self, name: str) -> Entry:
        """The entry registered as `name` (loading the built-ins and plugins first); unknown names raise."""
        self.load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            failed = "".join(f"; {failure.origin} failed to load ({failure.reason})" for failure in self.plugin_errors)
            raise RegistryError(
                f"unknown {self.kind} '{name}'; known: {known}{failed} "
                f"(a plugin's {self.kind}? install its package; `transgan plugins` lists what is installed)"
            )
        return self._entries[name]

    def get(self, name: str) -> Callable[..., Any]:
        """The object registered as `name` (a network builder, task class or loss); unknown names raise."""
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
        """Every entry, sorted by name."""
        self.load()
        return [self._entries[name] for name in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        """Whether `name` is registered (loading the built-ins and plugins first)."""
        self.load()
        return name in self._entries

    def plugin_entry_points(self) -> list[importlib.metadata.EntryPoint]:
        """The entry points declared under this registry's group, read from metadata (nothing imported)."""
        found = importlib.metadata.entry_points(group=self.entry_point_group)
        return sorted(found, key=lambda entry_point: (entry_point.name, entry_point.value))

    def load(self) -> None:
        """Import the built-in modules, then the plugins; runs once."""
        with _LOCK:
            if self._loaded:
                return
            self._loaded = True
            _import_all_builtins()
            for module in self.builtin_modules:  # already done for the three global registries
                importlib.import_module(module)
            for entry_point in self.plugin_entry_points():
                self._load_plugin(entry_point)

    def _load_plugin(self, entry_point: importlib.metadata.EntryPoint) -> None:
        package, version = _distribution_of(entry_point)
        loading = _PluginLoad(Origin(package, version, entry_point.name, entry_point.value))
        _LOADING.append(loading)
        try:
            loaded = entry_point.load()
            # A module registers on import; a function is handed the registry to register into.
            if not isinstance(loaded, types.ModuleType):
                if not callable(loaded) or inspect.isclass(loaded):
                    raise RegistryError(
                        f"entry point {entry_point.value} names a {type(loaded).__name__}; "
                        "name a module (registers on import) or a function taking the registry"
                    )
                loaded(self)
        except Exception as error:  # a broken plugin must not break the built-ins
            # Undo what it did register, so a half-loaded plugin leaves no trace.
            for registry, name in loading.added:
                registry._entries.pop(name, None)
            reason = str(error) if isinstance(error, RegistryError) else f"{type(error).__name__}: {error}"
            failure = PluginFailure(self.kind, self.entry_point_group, loading.origin, reason)
            self.plugin_errors.append(failure)
            warnings.warn(str(failure), PluginWarning, stacklevel=2)
        finally:
            _LOADING.pop()


def _fixing(base: Callable[..., Any], name: str, doc: str, fixed: dict[str, Any], what: str) -> Callable[..., Any]:
    """`base` with the keyword options `fixed` set; its signature (what build_network reads) lacks them."""
    signature = inspect.signature(base)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(parameter.kind not in named for parameter in signature.parameters.values()):
        raise RegistryError(f"{what}: the base must take named options only (no *args, **kwargs or positional-only)")
    unknown = sorted(set(fixed) - set(signature.parameters))
    if unknown:
        raise RegistryError(f"{what}: the base has no option {', '.join(unknown)}")
    kept = signature.replace(parameters=[p for p in signature.parameters.values() if p.name not in fixed])

    def variant(*args: Any, **options: Any) -> Any:
        # By name: a fixed option may sit between two kept ones in the base's positional order.
        return base(**kept.bind(*args, **options).arguments, **fixed)

    variant.__signature__ = kept  # type: ignore[attr-defined]
    variant.__name__ = variant.__qualname__ = name
    variant.__doc__ = doc
    variant.__module__ = base.__module__
    return variant


NETWORKS = Registry(
    "network",
    "transgan.networks",
    [
        "transgan.nets.resnet",
        "transgan.nets.antialias",
        "transgan.nets.unet",
        "transgan.nets.patchgan",
        "transgan.nets.mobile_resnet",
        "transgan.nets.dcgan",
        "transgan.nets.conditional",
        "transgan.nets.stylegan",
        "transgan.nets.stylegan2",
        "transgan.nets.stylegan2_d",
        "transgan.nets.progan",
    ],
)
LOSSES = Registry("loss", "transgan.losses", ["transgan.losses"])
TASKS = Registry(
    "task",
    "transgan.tasks",
    [
        "transgan.tasks.pix2pix",
        "transgan.tasks.cyclegan",
        "transgan.tasks.cut",
        "transgan.tasks.cgan",
        "transgan.tasks.stylegan",
        "transgan.tasks.progan",
    ],
)
REGISTRIES = {"network": NETWORKS, "task": TASKS, "loss": LOSSES}


def list_models(role: str | None = None) -> list[str]:
    """Names of the registered networks, optionally only one role ('translator', 'sampler', 'discriminator')."""
    return NETWORKS.names(role=role) if role else NETWORKS.names()


def plugin_failures() -> list[PluginFailure]:
    """Every plugin that failed to load so far, across all registries (each registry loads on first use)."""
    return [failure for registry in REGISTRIES.values() for failure in registry.plugin_errors]
