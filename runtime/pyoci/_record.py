"""A small stand-in for `dataclasses.dataclass` on the hot path.

`import dataclasses` pulls in inspect, ast, dis and tokenize (~20 ms of every pyoci call
here). The plan objects need only a fraction of it: fields from annotations (in order),
defaults or default factories, frozen instances, repr and equality. That is this module.
"""
from __future__ import annotations

_MISSING = object()


class _Field:
    __slots__ = ("default", "default_factory", "compare")

    def __init__(self, default=_MISSING, default_factory=_MISSING, compare=True):
        self.default = default
        self.default_factory = default_factory
        self.compare = compare


def field(*, default=_MISSING, default_factory=_MISSING, compare: bool = True, **_ignored):
    return _Field(default, default_factory, compare)


def _frozen_setattr(self, name, value=None):
    from dataclasses import FrozenInstanceError  # only on this error path (an AttributeError)
    raise FrozenInstanceError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")


def dataclass(cls=None, /, *, frozen: bool = False, **_ignored):
    def wrap(cls):
        names, defaults, factories, compared = [], {}, {}, []
        for klass in reversed(cls.__mro__[:-1]):
            for name in klass.__dict__.get("__annotations__", {}):
                if name not in names:
                    names.append(name)
                value = klass.__dict__.get(name, _MISSING)
                if isinstance(value, _Field):
                    if value.default is not _MISSING:
                        defaults[name] = value.default
                    if value.default_factory is not _MISSING:
                        factories[name] = value.default_factory
                    if not value.compare and name in compared:
                        compared.remove(name)
                    if value.compare and name not in compared:
                        compared.append(name)
                else:
                    if value is not _MISSING:
                        defaults[name] = value
                    if name not in compared:
                        compared.append(name)
        for name, value in defaults.items():
            setattr(cls, name, value)
        for name in factories:
            if name in cls.__dict__:
                delattr(cls, name)
        fields = tuple(names)

        def __init__(self, *args, **kw):
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__}() takes {len(fields)} positional arguments")
            values = dict(zip(fields, args))
            for k, v in kw.items():
                if k not in fields:
                    raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {k!r}")
                if k in values:
                    raise TypeError(f"{cls.__name__}() got multiple values for argument {k!r}")
                values[k] = v
            for name in fields:
                if name not in values:
                    if name in factories:
                        values[name] = factories[name]()
                    elif name in defaults:
                        values[name] = defaults[name]
                    else:
                        raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
                object.__setattr__(self, name, values[name])
            post = getattr(self, "__post_init__", None)
            if post is not None:
                post()

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields)
            return f"{cls.__name__}({inner})"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in compared)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        cls.__dataclass_fields__ = fields
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_setattr
            cls.__hash__ = lambda self: hash(tuple(_hashable(getattr(self, n)) for n in compared))
        else:
            cls.__hash__ = None
        return cls

    return wrap if cls is None else wrap(cls)


def _hashable(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def replace(obj, **changes):
    values = {n: getattr(obj, n) for n in obj.__dataclass_fields__}
    values.update(changes)
    return type(obj)(**values)
